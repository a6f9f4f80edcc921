"""Speech-to-text pipelines: the real WhisperX one, and the protocol any pipeline follows."""
