"""Tests of the upload path: receive, multipart, unpack, storage, hostile uploads."""
