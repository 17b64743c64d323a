"""Update records: creating attempts, applying device statuses and controller decisions,
and reading them back (per rollout, per device, stale, counted, as statistics)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.protocol.messages import Status, StatusType
from fleetwave.store import codec, records
from fleetwave.store.database import Database, chunks
from fleetwave.store.records import OPEN_VALUES
from fleetwave.store.rows import StatusOutcome, UpdateStats
from fleetwave.store.schema import updates
from fleetwave.updates.model import Decision, UpdateRecord, UpdateState
from fleetwave.updates.transitions import Ignored, apply_status, pick_legacy_record

INVALID = "invalid_status"
"""Outcome of a status the state machine could not handle; the rest of its batch goes on."""
ROLLBACK_STATUSES = frozenset({StatusType.ROLLBACK_SUCCEEDED, StatusType.ROLLBACK_FAILED})


class Updates:
    """Every update attempt: `store.updates`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, new: Sequence[UpdateRecord]) -> list[UpdateRecord]:
        """Inserts new update records; returns those actually inserted.

        A record whose id exists or whose device and component already have an
        open update is skipped (the database decides, so two racing processes
        or a restarted controller never create a second open update). Each
        record's `release` is raised above every release its device and component
        already has (`next_release`), in the same transaction: the inserted
        records, as returned, carry the release their commands must use.
        """
        if not new:
            return []

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return await records.insert_new(conn, new)

        return await self._db.write(work)

    async def apply_statuses(self, statuses: Sequence[Status]) -> list[StatusOutcome]:
        """Applies a batch of device statuses through the state machine, in one transaction.

        Returns one outcome per status, in order. Statuses with an unknown
        correlation id, or one that belongs to another device, change nothing;
        a status the state machine cannot handle is reported, not raised.
        """
        batch = list(statuses)
        if not batch:
            return []

        async def work(conn: AsyncConnection) -> list[StatusOutcome]:
            by_id = await _records_for(conn, batch)
            by_corr = {r.correlation_id: r.id for r in by_id.values()}
            by_device: dict[str, set[str]] = defaultdict(set)
            for record in by_id.values():
                by_device[record.device].add(record.id)
            originals = dict(by_id)
            outcomes: list[StatusOutcome] = []
            dirty: set[str] = set()
            for status in batch:
                try:
                    outcome = _apply_one(status, by_id, by_corr, by_device)
                except Exception:  # one bad message must never lose the rest of the batch
                    outcome = StatusOutcome(status, None, None, INVALID)
                if outcome.after is not None:
                    by_id[outcome.after.id] = outcome.after
                    dirty.add(outcome.after.id)
                outcomes.append(outcome)
            await records.save(conn, (by_id[i] for i in sorted(dirty)), originals)
            return outcomes

        # A device's own report, stored by whichever replica its $share delivered it to.
        return await self._db.write(work, fenced=False)

    async def apply_decisions(self, items: Sequence[tuple[str, Decision]]) -> list[UpdateRecord]:
        """Applies controller decisions (record id, decision) in one transaction;
        returns the records that changed, in their final form."""
        if not items:
            return []

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return await records.decide(conn, items)

        return await self._db.write(work)

    async def _select(self, stmt: sa.Select[Any]) -> list[UpdateRecord]:
        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return [codec.record_from_row(row._mapping) for row in await conn.execute(stmt)]

        return await self._db.read(work)

    async def get(self, id: str) -> UpdateRecord | None:
        found = await self._select(sa.select(updates).where(updates.c.id == id))
        return found[0] if found else None

    async def by_ids(self, ids: Sequence[str]) -> list[UpdateRecord]:
        """The records with these ids (a leader reads back what followers settled)."""
        found: list[UpdateRecord] = []
        for chunk in chunks(sorted(ids)):
            found += await self._select(sa.select(updates).where(updates.c.id.in_(chunk)))
        return found

    async def open(self, rollout: str | None = None) -> list[UpdateRecord]:
        """The updates still in an open state (of one rollout, or all), oldest first."""
        stmt = sa.select(updates).where(updates.c.state.in_(OPEN_VALUES))
        if rollout is not None:
            stmt = stmt.where(updates.c.rollout == rollout)
        return await self._select(stmt.order_by(updates.c.created_at, updates.c.id))

    async def of_rollout(self, rollout: str) -> list[UpdateRecord]:
        """Every attempt of a rollout, oldest first."""
        return await self._select(sa.select(updates).where(updates.c.rollout == rollout)
                                  .order_by(updates.c.created_at, updates.c.attempt,
                                            updates.c.id))

    async def of_device(self, uuid: str, limit: int = 100) -> list[UpdateRecord]:
        """A device's update records, newest first."""
        return await self._select(
            sa.select(updates).where(updates.c.device == uuid)
            .order_by(updates.c.created_at.desc(), updates.c.attempt.desc(), updates.c.id.desc())
            .limit(limit))

    async def stale(self, older_than_seconds: float, now: float,
                    states: Sequence[UpdateState] | None = None, *,
                    after: tuple[float, str] | None = None,
                    limit: int | None = None) -> list[UpdateRecord]:
        """Updates still in `states` (default: any open state) created more than
        `older_than_seconds` before `now`, oldest first; `after` (created_at, id) and
        `limit` page through them by key, so a page costs the same wherever it starts."""
        values = OPEN_VALUES if states is None else sorted({s.value for s in states})
        stmt = sa.select(updates).where(updates.c.state.in_(values),
                                        updates.c.created_at < now - older_than_seconds)
        if after is not None:
            stmt = stmt.where(sa.tuple_(updates.c.created_at, updates.c.id) > after)
        stmt = stmt.order_by(updates.c.created_at, updates.c.id)
        return await self._select(stmt if limit is None else stmt.limit(limit))

    async def rollout_counts(self, rollout: str) -> dict[str, int]:
        """Devices per state, counting each device's latest attempt per component.

        Every state is a key (0 when none), so callers can export them as-is.
        """
        stmt = (sa.select(updates.c.device, updates.c.component, updates.c.state,
                          updates.c.attempt, updates.c.created_at)
                .where(updates.c.rollout == rollout))

        async def work(conn: AsyncConnection) -> dict[str, int]:
            latest: dict[tuple[str, str], tuple[tuple[float, int], str]] = {}
            for row in await conn.execute(stmt):
                key = (row.device, row.component)
                rank = (row.created_at, row.attempt)
                if key not in latest or rank > latest[key][0]:
                    latest[key] = (rank, row.state)
            counts = {state.value: 0 for state in UpdateState}
            for _, state in latest.values():
                counts[state] += 1
            return counts

        return await self._db.read(work)

    async def stats(self, rollout: str | None = None) -> list[UpdateStats]:
        """Success rate and duration figures per rollout, component and target version.

        Rollback records are left out: they measure the way back, not the version.
        """
        stmt = (sa.select(updates.c.rollout, updates.c.component, updates.c.to_version,
                          updates.c.state, updates.c.created_at, updates.c.started_at,
                          updates.c.completed_at)
                .where(updates.c.action == "update"))
        if rollout is not None:
            stmt = stmt.where(updates.c.rollout == rollout)

        async def work(conn: AsyncConnection) -> list[UpdateStats]:
            groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
            for row in await conn.execute(stmt):
                groups[(row.rollout, row.component, row.to_version)].append(row)
            return [_stats(key, rows) for key, rows in sorted(groups.items())]

        return await self._db.read(work)


async def _records_for(conn: AsyncConnection, batch: Sequence[Status]
                       ) -> dict[str, UpdateRecord]:
    """The records a batch of statuses may touch, by id: those its correlation ids name,
    the open ones of devices that sent none, and for a legacy rollback status the
    device's newest record."""
    by_id: dict[str, UpdateRecord] = {}
    correlated = {s.correlation_id for s in batch if s.correlation_id is not None}
    for record in await records.load(conn, updates.c.correlation_id, list(correlated)):
        by_id[record.id] = record
    legacy = {s.device for s in batch if s.correlation_id is None}
    for record in await records.load(conn, updates.c.device, list(legacy),
                                     updates.c.state.in_(OPEN_VALUES)):
        by_id[record.id] = record
    for device in sorted({s.device for s in batch if s.correlation_id is None
                          and s.type in ROLLBACK_STATUSES}):
        row = (await conn.execute(
            records.select_for_update(conn).where(updates.c.device == device)
            .order_by(updates.c.created_at.desc(), updates.c.attempt.desc())
            .limit(1))).first()
        if row is not None:
            newest = codec.record_from_row(row._mapping)
            by_id.setdefault(newest.id, newest)
    return by_id


def _apply_one(status: Status, by_id: Mapping[str, UpdateRecord], by_corr: Mapping[str, str],
               by_device: Mapping[str, set[str]]) -> StatusOutcome:
    if status.correlation_id is not None:
        record_id = by_corr.get(status.correlation_id)
        if record_id is None:
            return StatusOutcome(status, None, None, Ignored.UNKNOWN_UPDATE)
        record = by_id[record_id]
    else:
        candidates = [by_id[i] for i in by_device.get(status.device, ())]
        picked = pick_legacy_record(status, candidates)
        if picked.record is None:
            return StatusOutcome(status, None, None, picked.ignored)
        record = picked.record
    if record.device != status.device:
        # Correlation ids are not secrets: never let one device touch another's record.
        return StatusOutcome(status, None, None, Ignored.WRONG_DEVICE)
    transition = apply_status(record, status)
    after = None if transition.record is None else codec.sanitized(transition.record)
    return StatusOutcome(status, record, after, transition.ignored)


def _stats(key: tuple[str, str, str], rows: list[Any]) -> UpdateStats:
    count: dict[str, int] = defaultdict(int)
    durations: list[float] = []
    for row in rows:
        count[row.state] += 1
        if row.state == UpdateState.SUCCEEDED and row.completed_at is not None:
            start = row.started_at if row.started_at is not None else row.created_at
            durations.append(max(0.0, row.completed_at - start))
    decided = count["succeeded"] + count["failed"] + count["timeout"]
    durations.sort()
    return UpdateStats(
        rollout=key[0], component=key[1], version=key[2], total=len(rows),
        open=sum(count[s] for s in OPEN_VALUES), succeeded=count["succeeded"],
        failed=count["failed"], timeout=count["timeout"], cancelled=count["cancelled"],
        rolled_back=count["rolled_back"],
        success_rate=count["succeeded"] / decided if decided else None,
        duration_p50=_quantile(durations, 0.5) if durations else None,
        duration_p95=_quantile(durations, 0.95) if durations else None,
        duration_mean=sum(durations) / len(durations) if durations else None)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)
