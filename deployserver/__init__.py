"""deployserver: a self-hosted deployment control plane for machine-learning models."""

__version__ = "0.1.0"
