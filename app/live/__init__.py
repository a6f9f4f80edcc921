"""Live transcription: audio as it is spoken in, partial and final text with speakers out."""
