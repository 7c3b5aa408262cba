"""Tests of the runtimes: images, cell networks, pip on the host."""
