"""The serving cell: a small server that loads a scoring script and answers predictions."""
