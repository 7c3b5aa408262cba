"""Tests of access: tokens, users, the token cache, login limits."""
