"""Troupe's benchmarks: ``python -m benchmarks`` (see README.md beside this file)."""
