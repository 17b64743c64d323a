"""Device reports to the store behind memory: the newest of each device, in large batches.

A status is stored before the broker is told it arrived (`mqtt/link.py`): it is sent once.
A state or liveness report is retained on the broker instead, and a controller that starts
again subscribes afresh and is sent the newest one of every device (DESIGN.md 2, "on start it
resynchronises from retained state"). So the ingest merges a report into memory at once,
where the planner and the API read it, and hands it here; this writer keeps only the newest
report of each device and kind (the store's own rule, `newest_reports`) and writes them one
transaction per batch while the ingest goes on. A burst of 200,000 retained reports at
start-up then costs one pass of parsing and a few dozen transactions, not one round trip
to the database per 500 messages on the ingest's critical path.

What this changes for a crash: a report acknowledged but not yet written is lost from the
store, not from the fleet: the broker still retains it and sends it on the next start.
Bounded: `room()` waits while `limit` devices wait to be written, so memory stays small and
the broker's flow control holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable
from typing import TypeVar

import structlog

from fleetwave.protocol.messages import Online, ReportedState
from fleetwave.store import Store
from fleetwave.store.devices import newest_reports
from fleetwave.store.errors import StoreError, StoreFull
from fleetwave.updates.model import UpdateRecord

log = structlog.get_logger("fleetwave.ingest")


class ReportWriter:
    """Write-behind of state and liveness reports, coalesced per device."""

    def __init__(self, store: Store, lock: asyncio.Lock, *,
                 on_settled: Callable[[list[UpdateRecord]], None],
                 batch: int = 5000, limit: int = 20000, retry_max: float = 10.0) -> None:
        self.store = store
        self.lock = lock
        """The fleet's: one writer at a time, as the reconciler's passes and the statuses."""
        self.on_settled = on_settled
        """Called with the open updates a written state report settled (`confirm_by_state`)."""
        self.batch = batch
        self.limit = limit
        self.retry_max = retry_max
        self._states: dict[str, ReportedState] = {}
        self._onlines: dict[str, Online] = {}
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self.stopped: StoreError | None = None
        """Set when the disk is full: the process is stopping, nothing more is written."""

    @property
    def pending(self) -> int:
        """Devices with a report not yet written."""
        return len(self._states) + len(self._onlines)

    def add(self, reports: Iterable[ReportedState | Online]) -> None:
        """Queue reports (already merged into memory); written soon, in the background."""
        newest_reports(reports, self._states, self._onlines)
        if self.pending and (self._task is None or self._task.done()) and self.stopped is None:
            self._task = asyncio.create_task(self._write_all(), name="report-writer")
        if self.pending >= self.limit:
            self._room.clear()

    async def room(self) -> None:
        """Until fewer than `limit` devices wait to be written."""
        await self._room.wait()

    async def flush(self) -> None:
        """Until every report queued so far is written (bound it with `asyncio.timeout`).
        Not while holding the fleet lock: `write_locked` is for that."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def write_locked(self) -> None:
        """Write everything queued, by a caller that holds the fleet lock (the start-up load,
        which must not read the store before it holds what memory holds)."""
        await self._drain(contextlib.nullcontext())

    async def _write_all(self) -> None:
        await self._drain(self.lock)
        self._room.set()

    async def _drain(self, lock: contextlib.AbstractAsyncContextManager[object]) -> None:
        """Batches until nothing waits, `lock` held for each; while the store is unreachable,
        back off between them (outside `lock`, so the reconciler is not held up)."""
        delay = 0.5
        while self.pending and self.stopped is None:
            async with lock:
                written = await self._write_batch()
            if written:
                delay = 0.5
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    async def _write_batch(self) -> bool:
        """One transaction of up to `batch` devices of each kind. False when the store was
        unreachable and the batch went back into the queue, to be tried again later."""
        states = _take(self._states, self.batch)
        onlines = _take(self._onlines, self.batch)
        if not states and not onlines:
            return True
        try:
            settled = await self.store.devices.apply_reports(states, onlines)
        except StoreFull as exc:
            self.stopped = exc  # the store stops the process (`Store.on_full`)
            return True
        except StoreError as exc:
            if not exc.retry:  # not this batch again: it would hold up every later one
                log.error("ingest.reports_unstored", error=str(exc),
                          devices=len(states) + len(onlines),
                          hint="they stay in memory; the broker resends them on restart")
                return True
            log.warning("ingest.store_unavailable", error=str(exc),
                        devices=len(states) + len(onlines))
            # Back in the queue, unless a newer report of the device came meanwhile.
            newest_reports(itertools.chain(states.values(), onlines.values()),
                           self._states, self._onlines)
            return False
        except Exception:  # a bug: this batch is lost to the store, the writer goes on
            log.exception("ingest.reports_unstored", devices=len(states) + len(onlines))
            return True
        if self.pending < self.limit:
            self._room.set()
        if settled:
            self.on_settled(settled)
        return True


T = TypeVar("T")


def _take(pending: dict[str, T], n: int) -> dict[str, T]:
    """The `n` oldest entries of `pending`, removed from it."""
    if len(pending) <= n:
        taken = dict(pending)
        pending.clear()
        return taken
    taken = dict(itertools.islice(pending.items(), n))
    for key in taken:
        del pending[key]
    return taken
