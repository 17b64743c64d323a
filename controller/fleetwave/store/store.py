"""The async store: one API over SQLite (the default) and PostgreSQL.

Everything the controller must remember across restarts goes through here, each in a
part of its own: `store.devices` (what devices report), `store.updates` (every update
attempt), `store.rollouts` (each rollout's engine state), `store.events` (the audit
trail), `store.deliveries` (webhook replay), `store.retention` (pruning, export) and
`store.leases` (the leader lease). Writes come in batches (the MQTT ingest hands over
thousands of messages a second), each batch in one transaction, and every write is safe
when two controller processes share the database: SQLite serialises writers with
`BEGIN IMMEDIATE`, PostgreSQL locks the rows a batch reads before it changes them, and
the partial unique index keeps one open update per device and component whatever the
code does.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetwave.store import events, records, rollouts
from fleetwave.store.database import Database, connect
from fleetwave.store.deliveries import Deliveries
from fleetwave.store.devices import Devices
from fleetwave.store.events import Events
from fleetwave.store.leadership import Leases
from fleetwave.store.retention import Retention
from fleetwave.store.rollouts import Rollouts
from fleetwave.store.rows import PassResult, PassWrite
from fleetwave.store.updates import Updates


def open_store(url: str, *, lock_timeout: float = 10.0, pool_size: int = 5) -> Store:
    """A store for `url` (`sqlite:///path.db`, `sqlite:///:memory:` or `postgresql://…`).

    Opening does no I/O; call `await store.migrate()` before use (the engine does
    it on start). `lock_timeout` is how long, in seconds, a write waits for a lock
    held by another process before giving up with a StoreError.
    """
    engine, where, path = connect(url, lock_timeout=lock_timeout, pool_size=pool_size)
    return Store(engine, where=where, path=path)


class Store(Database):
    """fleetwave's database, one per process and shared by all tasks: the transactions,
    fence and schema of `Database`, and a part for each kind of thing it keeps."""

    def __init__(self, engine: AsyncEngine, *, where: str, path: Path | None = None) -> None:
        super().__init__(engine, where=where, path=path)
        self.devices = Devices(self)
        self.updates = Updates(self)
        self.rollouts = Rollouts(self)
        self.events = Events(self)
        self.deliveries = Deliveries(self)
        self.retention = Retention(self)
        self.leases = Leases(self)

    async def __aenter__(self) -> Store:
        await self.migrate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def write_pass(self, work: PassWrite) -> PassResult:
        """Everything one reconcile pass decided, in one transaction: new records first
        (the database refuses a second open update), then decisions, events, each
        rollout's state and status, and forgotten rollouts."""

        async def run(conn: AsyncConnection) -> PassResult:
            created = await records.insert_new(conn, work.created) if work.created else []
            changed = await records.decide(conn, work.decisions) if work.decisions else []
            if work.events:
                await events.insert(conn, work.events)
            if work.saves:
                await rollouts.upsert(conn, work.saves)
            if work.deletes:
                await rollouts.forget(conn, work.deletes)
            return PassResult(created, changed)

        if not (work.created or work.decisions or work.events or work.saves or work.deletes):
            return PassResult([], [])
        return await self.write(run)
