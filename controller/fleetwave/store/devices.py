"""Devices: what each reports (state, liveness) and the inventory's labels for it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetwave.protocol.messages import Container, Online, ReportedState
from fleetwave.store import codec, records
from fleetwave.store.database import Database, execute_many, insert
from fleetwave.store.rows import DeviceRow, is_newer, report_is_newer
from fleetwave.store.schema import devices
from fleetwave.updates.model import UpdateRecord


class Devices:
    """Every device the controller has heard of or been told of: `store.devices`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply_messages(self, msgs: Sequence[ReportedState | Online]) -> list[UpdateRecord]:
        """Upserts reported state and liveness in one transaction; returns the open updates
        that a reported state settled (`confirm_by_state`).

        A message never overwrites a newer one already stored (by the device's clock when
        both reports carry it, else by receive time), so a late redelivery, or a replica
        draining an old backlog, cannot roll a device back.
        """
        return await self.apply_reports(*newest_reports(msgs))

    async def apply_reports(self, states: Mapping[str, ReportedState],
                            onlines: Mapping[str, Online]) -> list[UpdateRecord]:
        """`apply_messages` for reports already reduced to the newest of each device
        (`newest_reports`)."""
        if not states and not onlines:
            return []
        state_rows = [{
            "uuid": m.device, "versions": _json(m.versions), "reported_labels": _json(m.labels),
            "inventory_labels": "{}", "deployment_type": m.deployment_type, "ip": m.ip,
            "name": m.name, "containers": _containers(m.containers),
            "last_seen": m.received_at, "state_received_at": m.received_at,
            "state_timestamp": m.timestamp,
        } for m in states.values()]
        online_rows = [{
            "uuid": m.device, "online": m.online, "online_at": m.received_at,
            "last_seen": m.received_at if m.online else None,
        } for m in onlines.values()]

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            await execute_many(conn, "devices.state", _upsert_state, state_rows)
            await execute_many(conn, "devices.online", _upsert_online, online_rows)
            return await records.confirm(conn, states)

        # What a device reports: whichever replica receives it stores it.
        return await self._db.write(work, fenced=False)

    async def all(self) -> list[DeviceRow]:
        """Every device, by uuid."""

        async def work(conn: AsyncConnection) -> list[DeviceRow]:
            rows = await conn.execute(sa.select(devices).order_by(devices.c.uuid))
            return [codec.device_from_row(row._mapping) for row in rows]

        return await self._db.read(work)

    async def get(self, uuid: str) -> DeviceRow | None:
        async def work(conn: AsyncConnection) -> DeviceRow | None:
            row = (await conn.execute(sa.select(devices).where(devices.c.uuid == uuid))).first()
            return None if row is None else codec.device_from_row(row._mapping)

        return await self._db.read(work)

    async def set_inventory_labels(self, labels: Mapping[str, Mapping[str, str]]) -> None:
        """Replaces all inventory labels; devices known only from it get a row of their own,
        so a selector can target them before they ever report."""
        wanted = {uuid: dict(values) for uuid, values in labels.items()}

        async def work(conn: AsyncConnection) -> None:
            rows = await conn.execute(sa.select(devices.c.uuid, devices.c.inventory_labels))
            held = {row.uuid: dict(row.inventory_labels or {}) for row in rows}
            changed = [{"_uuid": uuid, "inventory_labels": wanted.get(uuid, {})}
                       for uuid, current in held.items() if wanted.get(uuid, {}) != current]
            if changed:
                await conn.execute(
                    devices.update().where(devices.c.uuid == sa.bindparam("_uuid"))
                    .values(inventory_labels=sa.bindparam("inventory_labels")), changed)
            new = [{"uuid": uuid, "versions": {}, "reported_labels": {},
                    "inventory_labels": values, "containers": []}
                   for uuid, values in wanted.items() if uuid not in held]
            if new:
                stmt = insert(conn, devices)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[devices.c.uuid],
                    set_={"inventory_labels": stmt.excluded.inventory_labels}), new)

        await self._db.write(work)


def newest_reports(msgs: Iterable[ReportedState | Online],
                   states: dict[str, ReportedState] | None = None,
                   onlines: dict[str, Online] | None = None,
                   ) -> tuple[dict[str, ReportedState], dict[str, Online]]:
    """The newest state report and the newest liveness message of each device, by the
    store's merge rule: of `msgs`, or of `msgs` and what `states` and `onlines` hold (they
    are updated in place)."""
    states = {} if states is None else states
    onlines = {} if onlines is None else onlines
    for msg in msgs:
        if isinstance(msg, ReportedState):
            held = states.get(msg.device)
            if held is None or report_is_newer(msg.timestamp, msg.received_at,
                                               held.timestamp, held.received_at):
                states[msg.device] = msg
        else:
            seen = onlines.get(msg.device)
            if is_newer(msg.received_at, seen.received_at if seen else None):
                onlines[msg.device] = msg
    return states, onlines


def _upsert_state(conn: AsyncConnection) -> Any:
    stmt = insert(conn, devices)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[devices.c.uuid],
        set_={"versions": ex.versions, "reported_labels": ex.reported_labels,
              "deployment_type": ex.deployment_type, "ip": ex.ip, "name": ex.name,
              "containers": ex.containers, "last_seen": _later(ex.last_seen),
              "state_received_at": ex.state_received_at,
              "state_timestamp": ex.state_timestamp},
        where=_newer_report(ex))


def _upsert_online(conn: AsyncConnection) -> Any:
    # A device first known by its `online` flag has empty JSON columns.
    empty: dict[str, Any] = {name: sa.literal_column(text) for name, text in (
        ("versions", "'{}'"), ("reported_labels", "'{}'"), ("inventory_labels", "'{}'"),
        ("containers", "'[]'"))}
    stmt = insert(conn, devices).values(empty)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[devices.c.uuid],
        set_={"online": ex.online, "online_at": ex.online_at,
              "last_seen": _later(ex.last_seen)},
        where=sa.or_(devices.c.online_at.is_(None), devices.c.online_at < ex.online_at))


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _json(mapping: Mapping[str, str]) -> str:
    return _encode(mapping) if mapping else "{}"


def _containers(containers: tuple[Container, ...]) -> str:
    return _encode(codec.containers_json(containers)) if containers else "[]"


def _newer_report(ex: Any) -> sa.ColumnElement[bool]:
    """`rows.report_is_newer` in SQL: whether an incoming state report replaces the stored
    one."""
    held = devices.c
    both = sa.and_(held.state_timestamp.is_not(None), ex.state_timestamp.is_not(None))
    return sa.or_(held.state_received_at.is_(None),
                  sa.and_(both, held.state_timestamp < ex.state_timestamp),
                  sa.and_(sa.not_(both), held.state_received_at < ex.state_received_at))


def _later(incoming: Any) -> sa.ColumnElement[Any]:
    """`last_seen` moves forward only."""
    return sa.case((sa.or_(devices.c.last_seen.is_(None), devices.c.last_seen < incoming),
                    incoming), else_=devices.c.last_seen)
