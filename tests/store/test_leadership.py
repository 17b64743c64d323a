"""Leader election and fencing in the store itself (DESIGN.md 9.3), on both backends.

A lease alone does not fence: these tests check that a deposed leader's writes fail in the
database, whatever the timing, and that a takeover waits for writes already in flight.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from fleetwave.store import Event, Store, open_store
from fleetwave.store.leadership import Fence, Fenced, new_holder
from fleetwave.store.schema import events

ROLE = "controller"


def event(message: str) -> Event:
    return Event(time=time.time(), rollout="r", type="Normal", reason="Test", message=message)


async def count_events(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(events)))
                   .scalar_one())


async def test_one_holder_at_a_time_and_the_epoch_increases_on_takeover(store: Store) -> None:
    a, b = new_holder(), new_holder()
    assert a != b
    first = await store.leases.acquire(ROLE, a, ttl=0.6, address="http://a:8080")
    assert first is not None and first.epoch == 1
    assert await store.leases.acquire(ROLE, b, ttl=0.6) is None
    renewed = await store.leases.renew(first, ttl=0.6)
    assert renewed is not None and renewed.epoch == 1
    leader = await store.leases.current(ROLE)
    assert leader is not None and (leader.holder, leader.address) == (a, "http://a:8080")
    await asyncio.sleep(0.8)
    assert await store.leases.current(ROLE) is None
    second = await store.leases.acquire(ROLE, b, ttl=5)
    assert second is not None and second.epoch == 2
    assert await store.leases.renew(first, ttl=5) is None  # a is deposed for good
    assert await store.leases.acquire(ROLE, a, ttl=5) is None


async def test_a_clean_stop_hands_over_at_once_with_a_higher_epoch(store: Store) -> None:
    a = await store.leases.acquire(ROLE, new_holder(), ttl=30)
    assert a is not None
    await store.leases.release(a)
    b = await store.leases.acquire(ROLE, new_holder(), ttl=30)
    assert b is not None and b.epoch == a.epoch + 1


async def test_a_deposed_leaders_writes_fail_in_the_store(store_url: str) -> None:
    leader, other = open_store(store_url), open_store(store_url)
    try:
        await leader.migrate()
        lease = await leader.leases.acquire(ROLE, new_holder(), ttl=0.6)
        assert lease is not None
        leader.set_fence(Fence(ROLE, lease.holder, lease.epoch))
        await leader.events.append([event("while leading")])
        await asyncio.sleep(0.8)  # the leader is "paused" past its lease...
        taken = await other.leases.acquire(ROLE, new_holder(), ttl=30)
        assert taken is not None and taken.epoch == lease.epoch + 1
        with pytest.raises(Fenced, match="no longer leads"):  # ...and wakes up to write
            await leader.events.append([event("after deposition")])
        assert await count_events(other) == 1
    finally:
        await leader.close()
        await other.close()


async def test_an_expired_lease_fences_even_before_anyone_takes_over(store: Store) -> None:
    lease = await store.leases.acquire(ROLE, new_holder(), ttl=0.3)
    assert lease is not None
    store.set_fence(Fence(ROLE, lease.holder, lease.epoch))
    await asyncio.sleep(0.5)
    with pytest.raises(Fenced):
        await store.events.append([event("late")])
    again = await store.leases.acquire(ROLE, lease.holder, ttl=30)
    assert again is not None and again.epoch == lease.epoch + 1  # expired: a new term


async def test_a_takeover_waits_for_a_write_in_flight(postgres_url: str) -> None:
    """PostgreSQL: the fence share-locks the lease row, so the write that passed its check
    commits before anyone can replace the leader (no write lands in the next term)."""
    leader, other = open_store(postgres_url), open_store(postgres_url)
    order: list[str] = []
    try:
        await leader.migrate()
        lease = await leader.leases.acquire(ROLE, new_holder(), ttl=1.0)
        assert lease is not None
        leader.set_fence(Fence(ROLE, lease.holder, lease.epoch))

        async def slow_write(conn: object) -> None:
            await asyncio.sleep(1.5)  # the lease expires while this transaction is open
            order.append("write committed")

        writing = asyncio.create_task(leader.write(slow_write))
        await asyncio.sleep(1.2)
        taken = await other.leases.acquire(ROLE, new_holder(), ttl=30)
        order.append("taken over")
        await writing
        assert taken is not None and taken.epoch == lease.epoch + 1
        assert order == ["write committed", "taken over"]
    finally:
        await leader.close()
        await other.close()
