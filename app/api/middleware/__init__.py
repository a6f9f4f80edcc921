"""ASGI middleware that runs before any route reads a body: API key, body size, upload admission."""
