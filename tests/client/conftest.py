"""The SDK is tried against the same real server as the command line."""

from tests.cli.conftest import server

__all__ = ["server"]
