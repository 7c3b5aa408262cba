"""Benchmarks that print ratios (subject / baseline), run by hand or in CI: ``python -m bench``.

Never timed asserts: ``tests/bench`` only checks that each one runs at a tiny size.
"""
