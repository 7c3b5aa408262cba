"""The record cache never serves what a committed write has changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from deployserver.store import db, orm
from deployserver.store.readcache import RecordCache


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "data").mkdir(exist_ok=True)
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    maker = db.make_sessionmaker(engine)
    with maker.begin() as session:
        model = orm.Model(name="m", last_version=1)
        session.add(model)
        session.flush()
        session.add(
            orm.Deployment(
                deploy_id="d1aaaaaaaaaa",
                model_id=model.id,
                version=1,
                meta={},
                entrypoint="score.py:Model",
                contract="model",
                status="received",
                desired_state="stopped",
            )
        )
    return maker


def test_a_committed_orm_write_drops_entries(sessions: sessionmaker[Session]) -> None:
    cache = RecordCache()
    cache.watch(sessions)
    cache.put("d1aaaaaaaaaa", b"old", cache.generation)
    with sessions() as session:  # reads change nothing
        session.get(orm.Deployment, 1)
    assert cache.get("d1aaaaaaaaaa") == b"old"
    with sessions.begin() as session:
        session.get_one(orm.Deployment, 1).status = "starting"
    assert cache.get("d1aaaaaaaaaa") is None


def test_a_rolled_back_write_keeps_entries(sessions: sessionmaker[Session]) -> None:
    cache = RecordCache()
    cache.watch(sessions)
    cache.put("d1aaaaaaaaaa", b"old", cache.generation)
    with sessions() as session:
        session.get_one(orm.Deployment, 1).status = "starting"
        session.flush()
        session.rollback()
    assert cache.get("d1aaaaaaaaaa") == b"old"


def test_bulk_updates_drop_entries(sessions: sessionmaker[Session]) -> None:
    cache = RecordCache()
    cache.watch(sessions)
    cache.put("d1aaaaaaaaaa", b"old", cache.generation)
    with sessions.begin() as session:
        session.execute(update(orm.Model).values(active_deploy_id="d1aaaaaaaaaa"))
    assert cache.get("d1aaaaaaaaaa") is None


def test_a_read_that_overlapped_a_write_is_not_stored(sessions: sessionmaker[Session]) -> None:
    cache = RecordCache()
    cache.watch(sessions)
    generation = cache.generation  # a reader starts ...
    with sessions.begin() as session:  # ... a write commits meanwhile ...
        session.get_one(orm.Deployment, 1).status = "ready"
    cache.put("d1aaaaaaaaaa", b"what the reader saw", generation)  # ... then it stores
    assert cache.get("d1aaaaaaaaaa") is None


def test_entries_expire(sessions: sessionmaker[Session]) -> None:
    now = [0.0]
    cache = RecordCache(ttl=5, clock=lambda: now[0])
    cache.put("d1aaaaaaaaaa", b"x", cache.generation)
    now[0] = 4.9
    assert cache.get("d1aaaaaaaaaa") == b"x"
    now[0] = 5.0
    assert cache.get("d1aaaaaaaaaa") is None
