"""The serving cell: a small server that loads a scoring script and answers predictions."""

__version__ = "0.1.0"
