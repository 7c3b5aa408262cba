"""Attacks on the trust boundary: each one refused, with nothing left behind."""
