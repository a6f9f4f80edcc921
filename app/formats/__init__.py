"""Shapes a finished transcript is served in: subtitle and text exports, OpenAI response formats."""
