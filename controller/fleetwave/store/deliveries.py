"""Webhook deliveries already acted on, so a replayed delivery is refused (the API's
`DeliveryLog`), whichever replica it reaches."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.store.database import Database, insert
from fleetwave.store.schema import webhook_deliveries


class Deliveries:
    """The delivery keys seen and not yet expired: `store.deliveries`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def first(self, key: str, now: float, expires_at: float) -> bool:
        """Remember a webhook delivery; False when `key` was already seen and has not expired.

        One transaction: expired rows go first (so the table holds only live keys), then
        an insert that does nothing on a conflict, so two racing copies of one delivery
        (two replicas, a sender's retry) cannot both be first.
        """

        async def work(conn: AsyncConnection) -> bool:
            await conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.expires_at <= now))
            result = await conn.execute(
                insert(conn, webhook_deliveries).on_conflict_do_nothing()
                .values(key=key, received_at=now, expires_at=expires_at))
            return bool(result.rowcount)

        return await self._db.write(work)

    async def forget(self, key: str) -> None:
        """Undo `first` when acting on the delivery failed, so a retry may succeed."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.key == key))

        await self._db.write(work)
