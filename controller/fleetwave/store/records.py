"""Update records inside a caller's transaction: load, save, insert, decide, confirm.

These run on an `AsyncConnection` the caller opened, because one transaction often
spans parts: a reconcile pass inserts records and saves rollouts together, and a batch
of device states settles the open updates it confirms. PostgreSQL locks the records a
batch reads (`FOR UPDATE`) before it changes them, so two replicas never lose a write.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.protocol.messages import ReportedState
from fleetwave.store import codec
from fleetwave.store.database import chunks, execute_many, insert
from fleetwave.store.schema import updates
from fleetwave.updates.model import (
    OPEN_STATES,
    TERMINAL_STATES,
    Decision,
    UpdateRecord,
    next_release,
)
from fleetwave.updates.transitions import apply_decision, confirm_by_state

OPEN_VALUES = sorted(s.value for s in OPEN_STATES)
TERMINAL_VALUES = sorted(s.value for s in TERMINAL_STATES)


def select_for_update(conn: AsyncConnection) -> sa.Select[Any]:
    """`SELECT … FROM updates`, locking the rows on PostgreSQL (SQLite's lock is the file's)."""
    stmt = sa.select(updates)
    return stmt.with_for_update() if conn.dialect.name == "postgresql" else stmt


async def load(conn: AsyncConnection, column: sa.ColumnElement[Any], keys: Sequence[Any],
               *extra: sa.ColumnElement[bool]) -> list[UpdateRecord]:
    """The records whose `column` is one of `keys` (and match `extra`), locked, by id."""
    found: list[UpdateRecord] = []
    for chunk in chunks(sorted(keys)):
        rows = await conn.execute(select_for_update(conn)
                                  .where(column.in_(chunk), *extra).order_by(updates.c.id))
        found.extend(codec.record_from_row(row._mapping) for row in rows)
    return found


async def save(conn: AsyncConnection, records: Iterable[UpdateRecord],
               originals: Mapping[str, UpdateRecord]) -> None:
    """Writes what changed, one `executemany` per set of changed columns.

    A batch of statuses mostly changes the same three or four columns; writing
    only those keeps SQLite from rewriting untouched columns and indexes.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        old = originals[record.id]
        fields = tuple(name for name in codec.MUTABLE_FIELDS
                       if getattr(record, name) != getattr(old, name))
        if fields:
            groups[fields].append({"_id": record.id, **codec.record_params(record, fields)})
    for fields, params in groups.items():
        def build(conn: AsyncConnection, fields: tuple[str, ...] = fields) -> Any:
            return (updates.update().where(updates.c.id == sa.bindparam("_id"))
                    .values({name: sa.bindparam(name) for name in fields}))

        await execute_many(conn, "updates.save", build, params)


async def insert_new(conn: AsyncConnection, records: Sequence[UpdateRecord]
                     ) -> list[UpdateRecord]:
    """Inserts `records`, skipping any the database refuses (an id it has, or a second open
    update of a device and component); returns the inserted ones with their releases."""
    stmt = insert(conn, updates).on_conflict_do_nothing().returning(updates.c.id)
    inserted: set[str] = set()
    released: list[UpdateRecord] = []
    for chunk in chunks(records):
        batch = await _released(conn, chunk)
        released.extend(batch)
        result = await conn.execute(stmt, [codec.record_params(r) for r in batch])
        inserted.update(result.scalars().all())
    # A batch may repeat an id: report each inserted record once.
    unique: dict[str, UpdateRecord] = {}
    for record in released:
        if record.id in inserted:
            unique.setdefault(record.id, record)
    return list(unique.values())


async def _released(conn: AsyncConnection, records: Sequence[UpdateRecord]
                    ) -> list[UpdateRecord]:
    """`records` with releases above the highest stored for their device and component."""
    devices_ = sorted({r.device for r in records})
    rows = await conn.execute(
        sa.select(updates.c.device, updates.c.component, sa.func.max(updates.c.release))
        .where(updates.c.device.in_(devices_))
        .group_by(updates.c.device, updates.c.component))
    highest: dict[tuple[str, str], int] = {(d, c): int(m) for d, c, m in rows}
    out: list[UpdateRecord] = []
    for record in records:
        key = (record.device, record.component)
        release = max(record.release, next_release(record.created_at, highest.get(key)))
        highest[key] = release
        out.append(record if release == record.release
                   else dataclasses.replace(record, release=release))
    return out


async def decide(conn: AsyncConnection, items: Sequence[tuple[str, Decision]]
                 ) -> list[UpdateRecord]:
    """Applies controller decisions (record id, decision); returns the changed records."""
    by_id = {r.id: r for r in await load(conn, updates.c.id, list({i for i, _ in items}))}
    originals = dict(by_id)
    changed: dict[str, UpdateRecord] = {}
    for record_id, decision in items:
        record = by_id.get(record_id)
        if record is None:
            continue
        transition = apply_decision(record, decision)
        if transition.record is not None:
            by_id[record_id] = changed[record_id] = transition.record
    await save(conn, changed.values(), originals)
    return list(changed.values())


async def confirm(conn: AsyncConnection, states: Mapping[str, ReportedState]
                  ) -> list[UpdateRecord]:
    """Settles the open updates that these reported states show done (`confirm_by_state`)."""
    if not states:
        return []
    open_ = await load(conn, updates.c.device, list(states),
                       updates.c.state.in_(OPEN_VALUES), updates.c.action == "update")
    settled: dict[str, UpdateRecord] = {}
    for record in open_:
        state = states[record.device]
        after = confirm_by_state(record, state.versions, state.received_at,
                                 state.boot_id).record
        if after is not None:
            settled[record.id] = after
    await save(conn, settled.values(), {r.id: r for r in open_})
    return list(settled.values())
