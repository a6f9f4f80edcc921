"""`python -m app.models`: list the models and pull them into MODEL_CACHE_DIR (see app/models/cli.py)."""

from app.models.cli import main

main()
