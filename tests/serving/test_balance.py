"""The balancer: two random choices by requests outstanding, a replica that could not be
reached taken out, and the in-flight integral the autoscaler reads."""

from __future__ import annotations

from collections import Counter

from deployserver.serving.balance import EJECT_SECONDS, Load
from deployserver.serving.routetable import Replica

A, B, C = (Replica(name, f"http://{name}") for name in "abc")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_of_two_the_one_answering_fewer_is_chosen() -> None:
    load = Load()
    with load.request("d", "a"), load.request("d", "a"):
        assert {load.choose([A, B]) for _ in range(50)} == {B}
        assert load.outstanding("a") == 2 and load.inflight("d") == 2
    assert load.outstanding("a") == 0 and load.inflight("d") == 0


def test_idle_replicas_share_the_requests() -> None:
    load = Load()
    picked = Counter(load.choose([A, B, C]).cell_id for _ in range(3000))  # type: ignore[union-attr]
    assert set(picked) == {"a", "b", "c"} and min(picked.values()) > 600


def test_an_unreachable_replica_is_out_until_its_time_is_up() -> None:
    clock = Clock()
    load = Load(eject_clock=clock)
    load.eject("a")
    assert {load.choose([A, B]) for _ in range(50)} == {B}
    assert load.choose([A]) == A  # the last one left is still tried
    assert load.choose([A, B], tried=["b"]) == A
    assert load.choose([A, B], tried=["a", "b"]) is None
    clock.now += EJECT_SECONDS
    assert {load.choose([A, B]) for _ in range(200)} == {A, B}


def test_the_in_flight_integral_and_last_activity() -> None:
    clock = Clock()
    load = Load(clock)
    assert load.area("d") == 0 and load.last_active("d") is None
    with load.request("d", "a"):
        clock.now = 2.0
        with load.request("d", "b"):
            clock.now = 3.0
            assert load.last_active("d") == 3.0  # busy now
        clock.now = 5.0
    assert load.area("d") == 2.0 + 2.0 + 2.0  # 1 for 2 s, 2 for 1 s, 1 for 2 s
    clock.now = 9.0
    assert load.area("d") == 6.0 and load.last_active("d") == 5.0
    load.queued({"d": 1})  # a queued asynchronous prediction wants a replica too
    assert load.inflight("d") == 1
    load.queued({})
    assert load.inflight("d") == 0
