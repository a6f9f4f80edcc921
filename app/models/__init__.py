"""Model files: where each model lives (embedded, cached, downloadable), fetching it cache-first, and
`python -m app.models` to list and pull them ahead of time."""
