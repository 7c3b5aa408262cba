"""Tests of the Python SDK and what a push packs."""
