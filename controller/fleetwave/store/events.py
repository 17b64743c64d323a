"""The audit trail: what happened to each rollout and device, in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.store.database import Database
from fleetwave.store.rows import Event, EventPage
from fleetwave.store.schema import events


class Events:
    """Rollout and device events: `store.events`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, new: Sequence[Event]) -> None:
        if not new:
            return

        async def work(conn: AsyncConnection) -> None:
            await insert(conn, new)

        await self._db.write(work)

    async def page(self, rollout: str, offset: int = 0, limit: int = 100) -> EventPage:
        """A page of a rollout's events, oldest first, with the total count."""

        async def work(conn: AsyncConnection) -> EventPage:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(events)
                                        .where(events.c.rollout == rollout))).scalar_one()
            rows = await conn.execute(sa.select(events).where(events.c.rollout == rollout)
                                      .order_by(events.c.id).offset(offset).limit(limit))
            return EventPage(items=[from_row(row._mapping) for row in rows], total=int(total))

        return await self._db.read(work)


async def insert(conn: AsyncConnection, new: Sequence[Event]) -> None:
    """Appends `new` in the caller's transaction."""
    await conn.execute(events.insert(), [
        {"time": e.time, "rollout": e.rollout, "device": e.device, "type": e.type,
         "reason": e.reason, "message": e.message, "actor": e.actor} for e in new])


def from_row(row: Mapping[Any, Any]) -> Event:
    return Event(time=row["time"], rollout=row["rollout"], type=row["type"],
                 reason=row["reason"], message=row["message"], device=row["device"],
                 actor=row["actor"], id=int(row["id"]))
