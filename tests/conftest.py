"""Shared fixtures: settings on a temporary data folder, SQLite or a fresh PostgreSQL
database (DEPLOYSERVER_TEST_DATABASE_URL), the app served on a loopback port, and
clients with the admin token (``api``) or none (``anon``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from deployserver.config import Settings
from deployserver.main import create_app
from tests.helpers import ADMIN_TOKEN, bearer, serve

PG_ADMIN_URL = os.environ.get("DEPLOYSERVER_TEST_DATABASE_URL")


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite in the test's folder, or a new PostgreSQL database dropped afterwards."""
    if not PG_ADMIN_URL:
        yield f"sqlite:///{tmp_path / 'data' / 'deployserver.db'}"
        return
    name = f"ds_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, admin_token=ADMIN_TOKEN)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    """A client carrying the admin token."""
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer(ADMIN_TOKEN)) as client:
        yield client


@pytest.fixture
def anon(base_url: str) -> Iterator[httpx.Client]:
    """A client with no token at all."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client
