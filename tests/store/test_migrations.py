"""Alembic: upgrade to head and back to base run clean, and head matches the tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from deployserver.store import db
from deployserver.store.orm import Base

REPO = Path(__file__).resolve().parents[2]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_alembic_cli_upgrade_head_then_downgrade_base(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {**os.environ, "DEPLOYSERVER_DATABASE_URL": database_url}
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    assert {"models", "deployments", "deployment_files", "cells", "events"} <= _tables(database_url)
    db.downgrade(database_url, "base")
    assert _tables(database_url) <= {"alembic_version"}


def test_head_schema_matches_the_orm(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    db.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"the ORM and the migrations disagree; add a revision: {diff}"


def test_cli_db_upgrade(tmp_path: Path) -> None:
    data = tmp_path / "cli-data"
    subprocess.run(
        [sys.executable, "-m", "deployserver.cli", "db", "upgrade", "--data-dir", str(data)],
        check=True,
        capture_output=True,
    )
    assert "deployments" in _tables(f"sqlite:///{data / 'deployserver.db'}")
