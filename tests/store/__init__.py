"""Tests of the store: migrations, queries, the read and lookup caches."""
