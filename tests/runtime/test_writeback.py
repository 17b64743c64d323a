"""The write-behind of state and liveness reports (`runtime/writeback.py`), on a real store
in in-memory SQLite: the newest report of each device reaches the store, an unreachable
store loses nothing, and the queue is bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetwave.protocol.messages import Online, ReportedState
from fleetwave.runtime.writeback import ReportWriter
from fleetwave.store import Store
from fleetwave.store.errors import StoreError
from fleetwave.updates.model import UpdateRecord


def state(device: str, version: str, at: float) -> ReportedState:
    return ReportedState(device=device, versions={"agent": version}, received_at=at)


def writer(store: Store, **kwargs: Any) -> tuple[ReportWriter, asyncio.Lock]:
    lock = asyncio.Lock()
    settled: list[UpdateRecord] = []
    return ReportWriter(store, lock, on_settled=settled.extend, **kwargs), lock


async def versions(store: Store, device: str) -> dict[str, str] | None:
    row = await store.devices.get(device)
    return None if row is None else dict(row.versions)


async def test_the_newest_report_of_each_device_is_written_in_batches(store: Store) -> None:
    reports, _ = writer(store, batch=7)
    reports.add([state(f"d{i:02d}", "1.0.0", 100.0) for i in range(30)])
    reports.add([state("d03", "0.9.0", 50.0),  # older than the queued one: dropped
                 state("d04", "2.0.0", 200.0),
                 Online(device="d05", online=True, received_at=150.0)])
    assert reports.pending == 31  # 30 states, 1 liveness
    await reports.flush()
    assert reports.pending == 0
    assert await versions(store, "d03") == {"agent": "1.0.0"}
    assert await versions(store, "d04") == {"agent": "2.0.0"}
    assert await versions(store, "d29") == {"agent": "1.0.0"}
    row = await store.devices.get("d05")
    assert row is not None and row.online


async def test_an_unreachable_store_keeps_the_batch_and_a_newer_report_wins(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    reports, _ = writer(store)
    real = store.devices.apply_reports
    calls = 0

    async def flaky(*args: Any) -> list[UpdateRecord]:
        nonlocal calls
        calls += 1
        if calls == 1:
            # A newer report arrives while the first write fails.
            reports.add([state("d00", "3.0.0", 300.0)])
            raise StoreError("cannot reach the database", retry=True)
        return await real(*args)

    monkeypatch.setattr(store.devices, "apply_reports", flaky)
    reports.add([state("d00", "1.0.0", 100.0), state("d01", "1.0.0", 100.0)])
    await asyncio.wait_for(reports.flush(), 10)
    assert calls == 2
    assert await versions(store, "d00") == {"agent": "3.0.0"}
    assert await versions(store, "d01") == {"agent": "1.0.0"}


async def test_a_full_queue_holds_up_the_ingest_until_the_writer_catches_up(
        store: Store) -> None:
    reports, lock = writer(store, limit=3)
    async with lock:  # a reconciler pass holds the store: nothing is written meanwhile
        reports.add([state(f"d{i}", "1.0.0", 100.0) for i in range(5)])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reports.room(), 0.2)
    await asyncio.wait_for(reports.room(), 10)
    assert reports.pending == 0
    assert await versions(store, "d4") == {"agent": "1.0.0"}


async def test_the_start_up_load_writes_the_queue_under_the_lock_it_holds(
        store: Store) -> None:
    reports, lock = writer(store)
    async with lock:
        reports.add([state("d0", "1.0.0", 100.0)])
        await reports.write_locked()
        assert await versions(store, "d0") == {"agent": "1.0.0"}
    assert reports.pending == 0
