"""How long history stays, and one device's whole history on request."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.store import codec
from fleetwave.store import events as audit
from fleetwave.store.database import Database
from fleetwave.store.records import TERMINAL_VALUES
from fleetwave.store.schema import devices, events, updates


class Retention:
    """Pruning and export across devices, updates and events: `store.retention`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def prune(self, older_than_days: float, now: float) -> int:
        """Deletes terminal update records and events older than the cut-off; open updates
        stay whatever their age. Returns how many rows went."""
        cutoff = now - older_than_days * 86400.0

        async def work(conn: AsyncConnection) -> int:
            gone = await conn.execute(updates.delete().where(
                updates.c.state.in_(TERMINAL_VALUES), updates.c.updated_at < cutoff))
            old = await conn.execute(events.delete().where(events.c.time < cutoff))
            return int(gone.rowcount or 0) + int(old.rowcount or 0)

        return await self._db.write(work)

    async def export_device(self, uuid: str) -> dict[str, Any]:
        """A device's whole history as one JSON-ready document (support, audits, GDPR)."""

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            row = (await conn.execute(sa.select(devices).where(devices.c.uuid == uuid))).first()
            records = await conn.execute(
                sa.select(updates).where(updates.c.device == uuid)
                .order_by(updates.c.created_at.desc(), updates.c.attempt.desc()))
            device_events = await conn.execute(
                sa.select(events).where(events.c.device == uuid).order_by(events.c.id))
            return {
                "device": None if row is None else codec.device_json(
                    codec.device_from_row(row._mapping)),
                "updates": [codec.record_json(codec.record_from_row(r._mapping))
                            for r in records],
                "events": [codec.event_json(audit.from_row(e._mapping)) for e in device_events],
            }

        return await self._db.read(work)
