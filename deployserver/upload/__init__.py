"""Bytes in, a checked folder out: multipart receive, safe unpacking, storage, upload checks."""
