"""Leader election through the store itself, with fencing (DESIGN.md 9.3).

Replicas of `fleetwave run` on one PostgreSQL elect a leader with a lease row: whoever
finds it expired takes it and increments its `epoch`. Time is the database's clock, so
replicas with skewed clocks agree on expiry. A lease alone does not fence (a paused
leader wakes up and writes after it was replaced), so the leader's store carries a
`Fence`: every write transaction first locks the lease row `FOR SHARE` and checks that it
still names this holder and epoch and has not expired. A takeover must update that row,
so it waits for writes in flight and every later write of the deposed leader fails with
`Fenced`, in the store, whatever the timing.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.store.database import Database, insert
from fleetwave.store.errors import Fenced
from fleetwave.store.schema import leadership

__all__ = ["Fence", "Fenced", "Lease", "Leases", "new_holder"]


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    epoch: int
    expires_at: float
    address: str | None = None


def new_holder() -> str:
    """A holder id unique to this process run: a restarted replica is a new holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def db_now(conn: AsyncConnection) -> sa.ColumnElement[float]:
    """The database's clock in epoch seconds (one clock for every replica)."""
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Double)
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


@dataclass(frozen=True, slots=True)
class Fence:
    """What a leader's writes are conditional on."""

    name: str
    holder: str
    epoch: int

    async def check(self, conn: AsyncConnection) -> None:
        """Raises `Fenced` unless the lease row still names this holder and epoch, unexpired;
        on PostgreSQL the row stays share-locked until the transaction ends."""
        t = leadership.c
        stmt = sa.select(t.epoch).where(t.name == self.name, t.holder == self.holder,
                                        t.epoch == self.epoch, t.expires_at > db_now(conn))
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)
        if (await conn.execute(stmt)).first() is None:
            raise Fenced(f"write refused: this replica no longer leads {self.name!r} "
                         f"(epoch {self.epoch} was superseded or expired)")


async def try_acquire(conn: AsyncConnection, name: str, holder: str, ttl: float,
                      address: str | None = None) -> Lease | None:
    """Take the lease when it is free or expired (epoch + 1), or renew it when `holder`
    has it; None when another holder's lease is still valid."""
    t = leadership.c
    now = db_now(conn)
    row = (await conn.execute(
        sa.select(t.holder, t.epoch, t.expires_at > now).where(t.name == name)
        .with_for_update())).first()
    if row is None:
        got = (await conn.execute(
            insert(conn, leadership).values(name=name, holder=holder, epoch=1, address=address,
                                      expires_at=now + ttl)
            .on_conflict_do_nothing().returning(t.expires_at))).first()
        # None: another replica inserted the first lease in the same instant; it leads.
        return Lease(name, holder, 1, float(got[0]), address) if got is not None else None
    current_holder, epoch, valid = row
    if valid and current_holder != holder:
        return None
    new_epoch = epoch if current_holder == holder and valid else epoch + 1
    updated = (await conn.execute(
        sa.update(leadership).where(t.name == name)
        .values(holder=holder, epoch=new_epoch, expires_at=now + ttl, address=address)
        .returning(t.expires_at))).first()
    assert updated is not None
    return Lease(name, holder, int(new_epoch), float(updated[0]), address)


async def renew(conn: AsyncConnection, lease: Lease, ttl: float) -> Lease | None:
    """Extend a valid lease; None when it expired or another holder took it."""
    t = leadership.c
    now = db_now(conn)
    row = (await conn.execute(
        sa.update(leadership)
        .where(t.name == lease.name, t.holder == lease.holder, t.epoch == lease.epoch,
               t.expires_at > now)
        .values(expires_at=now + ttl).returning(t.expires_at))).first()
    if row is None:
        return None
    return Lease(lease.name, lease.holder, lease.epoch, float(row[0]), lease.address)


async def release(conn: AsyncConnection, lease: Lease) -> None:
    """Give the lease up at once (a clean stop), keeping its epoch for the next leader."""
    t = leadership.c
    await conn.execute(
        sa.update(leadership)
        .where(t.name == lease.name, t.holder == lease.holder, t.epoch == lease.epoch)
        .values(expires_at=db_now(conn) - 1.0))


async def current(conn: AsyncConnection, name: str) -> Lease | None:
    """The valid lease of `name`, if any (followers read the leader's address here)."""
    t = leadership.c
    row = (await conn.execute(
        sa.select(t.holder, t.epoch, t.expires_at, t.address)
        .where(t.name == name, t.expires_at > db_now(conn)))).first()
    if row is None:
        return None
    return Lease(name, row[0], int(row[1]), float(row[2]), row[3])


class Leases:
    """The leader lease, each call its own unfenced transaction: `store.leases`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def acquire(self, name: str, holder: str, ttl: float,
                      address: str | None = None) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await try_acquire(conn, name, holder, ttl, address)
        return await self._db.write(work, fenced=False)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await renew(conn, lease, ttl)
        return await self._db.write(work, fenced=False)

    async def release(self, lease: Lease) -> None:
        async def work(conn: AsyncConnection) -> None:
            await release(conn, lease)
        await self._db.write(work, fenced=False)

    async def current(self, name: str) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await current(conn, name)
        return await self._db.read(work)
