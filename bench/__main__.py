"""`python -m bench`: the whole benchmark (see bench/speed.py)."""

from bench.speed import main

main()
