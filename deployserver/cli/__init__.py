"""The deployserver command line: serve, db, token and user, and the client commands."""
