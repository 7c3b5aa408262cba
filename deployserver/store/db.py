"""Engine and session factories, and the Alembic upgrade that creates the schema."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.store.files import FILE_MODE, make_private, private_dir

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    # Requests run in a thread pool of 40: a pool as large keeps connections (and
    # SQLite's per-connection pragmas) from being reopened under load.
    kwargs: dict[str, Any] = {"pool_size": 20, "max_overflow": 20}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True  # a server may drop idle connections; a file cannot
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


async def read(sessions: sessionmaker[Session], fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a short read by primary key or index: on the event loop itself for
    SQLite, in a worker thread for a database server. An SQLite file in WAL mode never
    makes a reader wait for a writer, and such a read takes less time than the hop to a
    thread and back (about 1 ms of CPU on this machine kind, measured)."""
    bind = sessions.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at this project's migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite ``url``; None for other databases and in-memory ones."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:") or parsed.query.get("uri"):
        return None  # an SQLite URI: its options are the operator's business
    return Path(name)


def private_sqlite(url: str) -> None:
    """Make an SQLite database readable by the server's user only: the file is created
    0600 before SQLite opens it (SQLite gives the -wal, -shm and -journal files it makes
    beside it the database's own mode), and existing ones are tightened."""
    path = sqlite_path(url)
    if path is None or not path.parent.is_dir():
        return
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        make_private(path.with_name(path.name + suffix))


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (an SQLite file made private first:
    every path that creates the database comes through here)."""
    private_sqlite(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def prepare(settings: Settings, revision: str = "head") -> str:
    """The one set-up step of every process that uses the data folder (the server, the
    ``db`` and ``token``/``user`` commands): the folder and its parts made, private to the
    server's user (not pip's build user, not other local users), and the configured
    database brought to ``revision``. Returns the database URL."""
    private_dir(settings.data_dir)
    settings.deployments_dir.mkdir(exist_ok=True)  # cells' users read their own folders
    private_dir(settings.staging_dir)
    private_dir(settings.logs_dir)
    url = settings.resolved_database_url
    upgrade(url, revision)
    return url
