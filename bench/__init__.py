"""Benchmarks run by hand (`python -m bench.<name>` from the repository root); not part of the tests."""
