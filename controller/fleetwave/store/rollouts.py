"""Each rollout's engine state and status, as the reconciler last saved it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.store.database import Database, insert
from fleetwave.store.rows import RolloutRow, RolloutSave
from fleetwave.store.schema import rollouts


class Rollouts:
    """The rollouts' saved state: `store.rollouts`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, name: str, generation: int, spec_hash: str,
                   state: Mapping[str, Any], status: Mapping[str, Any], *,
                   now: float | None = None) -> None:
        """Stores (inserts or replaces) a rollout's engine state and status."""
        saved = RolloutSave(name, generation, spec_hash, state, status, now)

        async def work(conn: AsyncConnection) -> None:
            await upsert(conn, [saved])

        await self._db.write(work)

    async def load(self) -> dict[str, RolloutRow]:
        """Every saved rollout, by name."""

        async def work(conn: AsyncConnection) -> dict[str, RolloutRow]:
            rows = await conn.execute(sa.select(rollouts).order_by(rollouts.c.name))
            return {row.name: RolloutRow(name=row.name, generation=row.generation,
                                         spec_hash=row.spec_hash, state=dict(row.state),
                                         status=dict(row.status), updated_at=row.updated_at)
                    for row in rows}

        return await self._db.read(work)

    async def delete(self, name: str) -> None:
        """Forgets a rollout's state; its update records and events stay for the audit."""

        async def work(conn: AsyncConnection) -> None:
            await forget(conn, [name])

        await self._db.write(work)


async def upsert(conn: AsyncConnection, saves: Sequence[RolloutSave]) -> None:
    """Inserts or replaces these rollouts' rows, in the caller's transaction."""
    stmt = insert(conn, rollouts)
    ex = stmt.excluded
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[rollouts.c.name],
        set_={"generation": ex.generation, "spec_hash": ex.spec_hash, "state": ex.state,
              "status": ex.status, "updated_at": ex.updated_at}),
        [_params(s) for s in saves])


async def forget(conn: AsyncConnection, names: Sequence[str]) -> None:
    """Deletes these rollouts' rows, in the caller's transaction."""
    await conn.execute(rollouts.delete().where(rollouts.c.name.in_(list(names))))


def _params(save: RolloutSave) -> dict[str, Any]:
    return {"name": save.name, "generation": save.generation, "spec_hash": save.spec_hash,
            "state": dict(save.state), "status": dict(save.status),
            "updated_at": time.time() if save.now is None else save.now}
