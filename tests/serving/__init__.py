"""Tests of the data path: streamed results and what serves predictions."""
