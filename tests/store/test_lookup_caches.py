"""The bounded lookup caches: the LRU map itself, and the route table built on it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from deployserver.serving.routetable import RouteTable
from deployserver.store import db, orm
from deployserver.store.lrucache import LRUCache


def test_the_least_recently_used_goes_first() -> None:
    cache: LRUCache[str, int] = LRUCache(max_entries=3, ttl=60)
    for i, key in enumerate("abc"):
        cache.put(key, i, cache.generation)
    assert cache.get("a") == 0  # "a" is now the most recently used, "b" the least
    cache.put("d", 3, cache.generation)
    assert len(cache) == 3
    assert "b" not in cache and cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [0, 2, 3]


def test_entries_expire_but_are_still_remembered_as_there() -> None:
    now = [0.0]
    cache: LRUCache[str, int] = LRUCache(max_entries=3, ttl=1, clock=lambda: now[0])
    cache.put("a", 1, cache.generation)
    now[0] = 0.9
    assert cache.get("a") == 1
    now[0] = 1.0
    assert cache.get("a") is None
    assert "a" in cache  # what it was last, until stored again or pushed out
    cache.pop("a")
    assert "a" not in cache


def test_a_read_that_overlapped_an_invalidation_is_not_stored() -> None:
    cache: LRUCache[str, int] = LRUCache(max_entries=3, ttl=60)
    for invalidate in (lambda: cache.discard("x"), cache.clear):
        generation = cache.generation  # a reader starts ...
        invalidate()  # ... an invalidation comes ...
        assert cache.put("k", 1, generation) is False  # ... its answer is not kept
        assert cache.get("k") is None
    assert cache.put("k", 1, cache.generation) is True


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "data").mkdir(exist_ok=True)
    db.upgrade(database_url)
    maker = db.make_sessionmaker(db.make_engine(database_url))
    with maker.begin() as session:
        session.add(orm.Model(name="real", last_version=0))
    return maker


async def test_made_up_names_stay_within_the_cap_and_keep_real_models(
    sessions: sessionmaker[Session],
) -> None:
    table = RouteTable(sessions, ttl=60, max_entries=10, max_unknown=50)
    assert (await table.resolve("real")) is not None
    for i in range(500):
        assert await table.resolve(f"made-up-{i}") is None
    assert len(table) == 1 + 50
    assert table.known("real")  # the flood pushed out only other made-up names


async def test_a_route_load_that_overlapped_an_invalidation_is_not_stored(
    sessions: sessionmaker[Session],
) -> None:
    table = RouteTable(sessions, ttl=60)
    loaded, go_on = threading.Event(), threading.Event()
    load = table._load

    def paused_load(model: str, now: float) -> object:
        route = load(model, now)  # read ...
        loaded.set()
        go_on.wait(10)  # ... and paused before the table stores it
        return route

    table._load = paused_load  # type: ignore[method-assign]
    resolving = asyncio.create_task(table.resolve("real"))
    assert await asyncio.to_thread(loaded.wait, 10)
    table.invalidate("real")  # the reconciler changed the model meanwhile
    go_on.set()
    assert (await resolving) is not None  # the caller gets what was read ...
    assert not table.known("real") and len(table) == 0  # ... the table keeps none of it


async def test_requests_that_miss_the_same_model_at_once_share_one_load(
    sessions: sessionmaker[Session],
) -> None:
    table = RouteTable(sessions, ttl=60)
    loads: list[str] = []
    release = threading.Event()
    load = table._load

    def counted_load(model: str, now: float) -> object:
        loads.append(model)
        release.wait(10)  # every request below arrives while this load runs
        return load(model, now)

    table._load = counted_load  # type: ignore[method-assign]
    waiting = [asyncio.create_task(table.resolve("real")) for _ in range(32)]
    quitter = asyncio.create_task(table.resolve("real"))
    await asyncio.sleep(0.05)
    quitter.cancel()  # a caller that goes away cancels no one else's answer
    release.set()
    routes = await asyncio.gather(*waiting)
    assert loads == ["real"] and all(r is not None and r.model == "real" for r in routes)
    # after an invalidation a new request loads afresh, even with a load under way
    release.clear()
    table.invalidate("real")
    first = asyncio.create_task(table.resolve("real"))
    await asyncio.sleep(0.05)
    table.invalidate("real")
    second = asyncio.create_task(table.resolve("real"))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, second)
    assert loads == ["real", "real", "real"]
