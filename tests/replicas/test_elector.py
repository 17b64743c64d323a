"""The elector task (runtime/leadership.py) on a real PostgreSQL: one leader at a time, the
epoch on /metrics, the store fenced while following or deposed, and a paused leader that
knows by its own clock that it may have been replaced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from fleetwave.metrics import build_metrics
from fleetwave.runtime.leadership import Elector
from fleetwave.store import Event, Store, open_store
from fleetwave.store.leadership import Fenced


def event(message: str) -> Event:
    return Event(time=time.time(), rollout="r", type="Normal", reason="Test", message=message)


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[Store]]:
    opened = [open_store(postgres_url) for _ in range(2)]
    await opened[0].migrate()
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


class FakeClock:
    """A monotonic clock the test moves: stands for a process frozen with SIGSTOP."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_leader_and_a_follower_that_knows_its_address(stores: list[Store]) -> None:
    metrics = [build_metrics(), build_metrics()]
    a = Elector(stores[0], metrics[0], ttl=5, address="http://a:8080")
    b = Elector(stores[1], metrics[1], ttl=5, address="http://b:8080")
    await a.tick()
    await b.tick()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert b.leader_address == "http://a:8080"
    assert a.epoch == 1 and b.epoch is None
    assert metrics[0].registry.get_sample_value("fleetwave_leader") == 1
    assert metrics[0].registry.get_sample_value("fleetwave_leader_epoch") == 1
    assert metrics[1].registry.get_sample_value("fleetwave_leader") == 0
    await a.store.events.append([event("the leader writes")])
    with pytest.raises(Fenced):  # a follower's plan writes are refused in the store
        await b.store.events.append([event("a follower writes")])


async def test_a_clean_stop_hands_over_with_a_higher_epoch(stores: list[Store]) -> None:
    a = Elector(stores[0], build_metrics(), ttl=30)
    b = Elector(stores[1], build_metrics(), ttl=30)
    changes: list[bool] = []
    b.on_change(changes.append)
    led = asyncio.Event()
    a.on_change(lambda leading: led.set() if leading else None)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await led.wait()
    stop.set()
    await task
    await b.tick()
    assert b.is_leader and b.epoch == 2 and changes == [True]


async def test_a_paused_leader_steps_down_by_its_own_clock_and_is_fenced(
        stores: list[Store]) -> None:
    clock = FakeClock()
    a = Elector(stores[0], build_metrics(), ttl=1.0, clock=clock)
    b = Elector(stores[1], build_metrics(), ttl=30)
    await a.tick()
    assert a.still_leading()
    await asyncio.sleep(1.2)  # the lease expires on the database's clock...
    await b.tick()
    assert b.is_leader and b.epoch == 2
    clock.now += 1.2  # ...and the paused process wakes up
    assert not a.still_leading() and not a.is_leader
    with pytest.raises(Fenced):
        await a.store.events.append([event("written after waking up")])
    await a.tick()  # it stays a follower while the new leader renews
    assert not a.is_leader


async def test_a_failed_renew_steps_down_at_once(stores: list[Store]) -> None:
    a = Elector(stores[0], build_metrics(), ttl=0.5)
    b = Elector(stores[1], build_metrics(), ttl=30)
    await a.tick()
    await asyncio.sleep(0.7)
    await b.tick()
    await a.tick()
    assert not a.is_leader and b.is_leader

