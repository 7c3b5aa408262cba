"""Where state is kept: the engine and sessions, the ORM tables, every query, the read caches."""
