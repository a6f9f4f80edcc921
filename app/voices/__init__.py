"""Enrolled voices: speaker embeddings per API key, and naming a transcript's speakers with them."""
