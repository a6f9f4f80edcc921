"""WhisperX transcription API: upload audio, poll progress, fetch a speaker-labelled transcript."""
