"""The async store: one API over SQLite (the default) and PostgreSQL.

Everything the controller must remember across restarts goes through here:
what devices report, every update attempt, each rollout's engine state and
the audit trail. Writes come in batches (the MQTT ingest hands over thousands
of messages a second), each batch in one transaction, and every write is safe
when two controller processes share the database: SQLite serialises writers
with `BEGIN IMMEDIATE`, PostgreSQL locks the rows a batch reads before it
changes them, and the partial unique index keeps one open update per device
and component whatever the code does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from fleetwave.protocol.messages import Online, ReportedState, Status, StatusType
from fleetwave.store import codec, leadership
from fleetwave.store.errors import StoreError, StoreFull, translate
from fleetwave.store.leadership import Fence, Fenced, Lease
from fleetwave.store.rows import (
    DeviceRow,
    Event,
    EventPage,
    PassResult,
    PassWrite,
    RolloutRow,
    RolloutSave,
    StatusOutcome,
    UpdateStats,
    is_newer,
    report_is_newer,
)
from fleetwave.store.schema import devices, events, rollouts, updates, webhook_deliveries
from fleetwave.updates.model import (
    OPEN_STATES,
    TERMINAL_STATES,
    Decision,
    UpdateRecord,
    UpdateState,
    next_release,
)
from fleetwave.updates.transitions import (
    Ignored,
    apply_decision,
    apply_status,
    confirm_by_state,
    pick_legacy_record,
)

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
CHUNK = 500
"""Ids per `IN (...)` query: far below SQLite's and PostgreSQL's bind-parameter limits."""
RETRIES = 5
"""Attempts of a batch that PostgreSQL aborted as a deadlock or serialization failure."""
MIGRATION_LOCK = 0x666C_7477_6176_65
"""PostgreSQL advisory lock key held while migrating, so two replicas never race."""
INVALID = "invalid_status"
"""Outcome of a status the state machine could not handle; the rest of its batch goes on."""

OPEN_VALUES = sorted(s.value for s in OPEN_STATES)
TERMINAL_VALUES = sorted(s.value for s in TERMINAL_STATES)
ROLLBACK_STATUSES = frozenset({StatusType.ROLLBACK_SUCCEEDED, StatusType.ROLLBACK_FAILED})


def open_store(url: str, *, lock_timeout: float = 10.0, pool_size: int = 5) -> Store:
    """A store for `url` (`sqlite:///path.db`, `sqlite:///:memory:` or `postgresql://…`).

    Opening does no I/O; call `await store.migrate()` before use (the engine does
    it on start). `lock_timeout` is how long, in seconds, a write waits for a lock
    held by another process before giving up with a StoreError.
    """
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(f"cannot parse store URL {url!r}; use sqlite:///path.db or "
                         f"postgresql://user@host/db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ":memory:"
        memory = database == ":memory:" or database.startswith("file::memory:")
        target = parsed.set(drivername="sqlite+aiosqlite")
        kwargs: dict[str, Any] = {"connect_args": {"timeout": lock_timeout}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_async_engine(target, **kwargs)
        _configure_sqlite(engine, wal=not memory)
        return Store(engine, where=database, path=None if memory else Path(database))
    if backend in ("postgresql", "postgres"):
        target = parsed.set(drivername="postgresql+psycopg")
        engine = create_async_engine(
            target, pool_size=pool_size, pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(lock_timeout)),
                          "options": f"-c lock_timeout={int(lock_timeout * 1000)}"})
        return Store(engine, where=target.render_as_string(hide_password=True).replace(
            "postgresql+psycopg", "postgresql"))
    raise StoreError(f"unsupported store URL scheme {parsed.drivername!r}; use sqlite:///path.db "
                     f"or postgresql://user@host/db")


def _configure_sqlite(engine: AsyncEngine, *, wal: bool) -> None:
    """WAL + synchronous=NORMAL, and our own BEGIN so writers take the lock up front.

    A deferred transaction that reads and then writes cannot wait for another
    writer in WAL mode (SQLite answers "locked" at once); `BEGIN IMMEDIATE`
    waits up to the busy timeout instead. Reads use a plain `BEGIN`.
    """

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            _retry_locked(lambda: cursor.execute("PRAGMA journal_mode=WAL"))
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("fleetwave_begin",
                                                              "BEGIN IMMEDIATE"))


def _retry_locked(statement: Callable[[], object], timeout: float = 30.0) -> None:
    """Run `statement`, retrying while SQLite says the database is locked.

    Switching to WAL needs an exclusive lock and does not wait on the busy timeout:
    two processes opening a fresh database at once would otherwise fail at random.
    Runs in aiosqlite's worker thread, so sleeping blocks no event loop.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _newer_report(ex: Any) -> sa.ColumnElement[bool]:
    """`rows.report_is_newer` in SQL: whether an incoming state report replaces the stored
    one."""
    held = devices.c
    both = sa.and_(held.state_timestamp.is_not(None), ex.state_timestamp.is_not(None))
    return sa.or_(held.state_received_at.is_(None),
                  sa.and_(both, held.state_timestamp < ex.state_timestamp),
                  sa.and_(sa.not_(both), held.state_received_at < ex.state_received_at))


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


class Store:
    """Async access to fleetwave's database; one per process, shared by all tasks."""

    def __init__(self, engine: AsyncEngine, *, where: str, path: Path | None = None) -> None:
        self._engine = engine
        self._where = where
        self._path = path
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        self._fence: Fence | None = None
        self.on_fenced: Callable[[Fenced], None] | None = None
        """Told of every write the fence refused (the elector steps down at once)."""
        self.on_full: Callable[[StoreFull], None] | None = None
        """Told when the disk under the database is full (the controller stops)."""
        self.unreachable: str | None = None
        """Why the last transaction could not reach the database (None once one did): for
        /readyz while PostgreSQL restarts."""

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine, for tests and diagnostics; code uses the methods."""
        return self._engine

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    @property
    def path(self) -> Path | None:
        """The SQLite database file (None in memory and on PostgreSQL)."""
        return self._path

    async def __aenter__(self) -> Store:
        await self.migrate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transactions ---------------------------------------------------------------------

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]], *,
                     fenced: bool = True) -> T:
        """Runs `work` in one write transaction, retried when PostgreSQL picked it as a
        deadlock victim; driver errors become StoreError. Under a fence (a leader's store)
        the transaction first proves the lease is still ours, or raises `Fenced`."""
        for attempt in range(RETRIES):
            try:
                async with self._engine.begin() as conn:
                    if fenced and self._fence is not None:
                        await self._check_fence(self._fence, conn)
                    done = await work(conn)
                self.unreachable = None
                return done
            except sqlalchemy.exc.DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code in ("40P01", "40001") and attempt + 1 < RETRIES:
                    await asyncio.sleep(0.01 * 2**attempt)
                    continue
                raise self._failed(exc) from exc
            except OSError as exc:
                raise self._failed(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check_fence(self, fence: Fence, conn: AsyncConnection) -> None:
        try:
            await fence.check(conn)
        except Fenced as exc:
            if self.on_fenced is not None:
                self.on_fenced(exc)
            raise

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Runs `work` in a read-only transaction (no write lock on SQLite)."""
        try:
            async with self._engine.connect() as conn:
                await conn.execution_options(fleetwave_begin="BEGIN")
                async with conn.begin():
                    done = await work(conn)
            self.unreachable = None
            return done
        except (sqlalchemy.exc.DBAPIError, OSError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> StoreError:
        error = translate(exc, self._where)
        if error.retry:
            self.unreachable = error.message
        if isinstance(error, StoreFull) and self.on_full is not None:
            self.on_full(error)
        return error

    async def close(self) -> None:
        await self._engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Brings the schema to this code's head; a no-op when it is there already.

        Refuses a database migrated by a newer fleetwave, which this code could corrupt.
        """

        if self._path is not None and not self._path.parent.is_dir():
            # Checked here because aiosqlite leaves a worker thread behind when open fails.
            raise StoreError(f"cannot open the SQLite database {self._where}: its directory "
                             f"does not exist; create it or change --store")

        async def work(conn: AsyncConnection) -> None:
            await conn.run_sync(self._upgrade)

        await self._write(work, fenced=False)

    def _upgrade(self, conn: Connection) -> None:
        if self._postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        script = ScriptDirectory.from_config(config)
        known = {rev.revision for rev in script.walk_revisions()}
        current = MigrationContext.configure(conn).get_current_heads()
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise StoreError(
                f"the database {self._where} has schema revision {', '.join(unknown)}, newer "
                f"than this fleetwave knows (latest {script.get_current_head()}); upgrade "
                f"fleetwave or point --store at another database")
        command.upgrade(config, "head")

    async def schema_revision(self) -> str | None:
        """The database's schema revision (None before the first migration)."""

        async def work(conn: AsyncConnection) -> str | None:
            def current(sync: Connection) -> str | None:
                return MigrationContext.configure(sync).get_current_revision()

            return await conn.run_sync(current)

        return await self._read(work)

    # -- leadership -----------------------------------------------------------------------

    def set_fence(self, fence: Fence | None) -> None:
        """Make every later write conditional on `fence` (None: unfenced, a single writer)."""
        self._fence = fence

    async def acquire_leadership(self, name: str, holder: str, ttl: float,
                                 address: str | None = None) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await leadership.try_acquire(conn, name, holder, ttl, address)
        return await self._write(work, fenced=False)

    async def renew_leadership(self, lease: Lease, ttl: float) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await leadership.renew(conn, lease, ttl)
        return await self._write(work, fenced=False)

    async def release_leadership(self, lease: Lease) -> None:
        async def work(conn: AsyncConnection) -> None:
            await leadership.release(conn, lease)
        await self._write(work, fenced=False)

    async def current_leader(self, name: str) -> Lease | None:
        async def work(conn: AsyncConnection) -> Lease | None:
            return await leadership.current(conn, name)
        return await self._read(work)

    # -- devices --------------------------------------------------------------------------

    async def apply_device_messages(self, msgs: Sequence[ReportedState | Online]
                                    ) -> list[UpdateRecord]:
        """Upserts reported state and liveness in one transaction; returns the open updates
        that a reported state settled (`confirm_by_state`).

        A message never overwrites a newer one already stored (by the device's clock when
        both reports carry it, else by receive time), so a late redelivery, or a replica
        draining an old backlog, cannot roll a device back.
        """
        states: dict[str, ReportedState] = {}
        onlines: dict[str, Online] = {}
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
        if not states and not onlines:
            return []
        state_params = [{
            "uuid": m.device, "versions": dict(m.versions), "reported_labels": dict(m.labels),
            "inventory_labels": {}, "deployment_type": m.deployment_type, "ip": m.ip,
            "name": m.name, "containers": codec.containers_json(m.containers),
            "last_seen": m.received_at, "state_received_at": m.received_at,
            "state_timestamp": m.timestamp,
        } for m in states.values()]
        online_params: list[dict[str, Any]] = [{
            "uuid": m.device, "online": m.online, "online_at": m.received_at,
            "last_seen": m.received_at if m.online else None,
        } for m in onlines.values()]

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            if state_params:
                stmt = self._insert(devices)
                ex = stmt.excluded
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[devices.c.uuid],
                    set_={"versions": ex.versions, "reported_labels": ex.reported_labels,
                          "deployment_type": ex.deployment_type, "ip": ex.ip, "name": ex.name,
                          "containers": ex.containers, "last_seen": self._later(ex.last_seen),
                          "state_received_at": ex.state_received_at,
                          "state_timestamp": ex.state_timestamp},
                    where=_newer_report(ex)),
                    state_params)
            if online_params:
                # A device first known by its `online` flag has empty JSON columns: SQL
                # literals, not four JSON encodings per row of a 100,000-device start-up.
                empty: dict[str, Any] = {name: sa.literal_column(text) for name, text in (
                    ("versions", "'{}'"), ("reported_labels", "'{}'"),
                    ("inventory_labels", "'{}'"), ("containers", "'[]'"))}
                stmt = self._insert(devices).values(empty)
                ex = stmt.excluded
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[devices.c.uuid],
                    set_={"online": ex.online, "online_at": ex.online_at,
                          "last_seen": self._later(ex.last_seen)},
                    where=sa.or_(devices.c.online_at.is_(None),
                                 devices.c.online_at < ex.online_at)),
                    online_params)
            return await self._confirm_by_state(conn, states)

        # What a device reports: whichever replica receives it stores it.
        return await self._write(work, fenced=False)

    async def _confirm_by_state(self, conn: AsyncConnection,
                                states: Mapping[str, ReportedState]) -> list[UpdateRecord]:
        if not states:
            return []
        open_ = await self._load(conn, updates.c.device, list(states),
                                 updates.c.state.in_(OPEN_VALUES), updates.c.action == "update")
        settled: dict[str, UpdateRecord] = {}
        for record in open_:
            state = states[record.device]
            after = confirm_by_state(record, state.versions, state.received_at,
                                     state.boot_id).record
            if after is not None:
                settled[record.id] = after
        await self._save(conn, settled.values(), {r.id: r for r in open_})
        return list(settled.values())

    @staticmethod
    def _later(incoming: Any) -> sa.ColumnElement[Any]:
        return sa.case((sa.or_(devices.c.last_seen.is_(None), devices.c.last_seen < incoming),
                        incoming), else_=devices.c.last_seen)

    async def list_devices(self) -> list[DeviceRow]:
        async def work(conn: AsyncConnection) -> list[DeviceRow]:
            rows = await conn.execute(sa.select(devices).order_by(devices.c.uuid))
            return [codec.device_from_row(row._mapping) for row in rows]

        return await self._read(work)

    async def get_device(self, uuid: str) -> DeviceRow | None:
        async def work(conn: AsyncConnection) -> DeviceRow | None:
            row = (await conn.execute(sa.select(devices).where(devices.c.uuid == uuid))).first()
            return None if row is None else codec.device_from_row(row._mapping)

        return await self._read(work)

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
                stmt = self._insert(devices)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[devices.c.uuid],
                    set_={"inventory_labels": stmt.excluded.inventory_labels}), new)

        await self._write(work)

    # -- updates --------------------------------------------------------------------------

    async def create_updates(self, records: Sequence[UpdateRecord]) -> list[UpdateRecord]:
        """Inserts new update records; returns those actually inserted.

        A record whose id exists or whose device and component already have an
        open update is skipped (the database decides, so two racing processes
        or a restarted controller never create a second open update). Each
        record's `release` is raised above every release its device and component
        already has (`next_release`), in the same transaction: the inserted
        records, as returned, carry the release their commands must use.
        """
        if not records:
            return []

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return await self._insert_updates(conn, records)

        return await self._write(work)

    async def _insert_updates(self, conn: AsyncConnection, records: Sequence[UpdateRecord]
                              ) -> list[UpdateRecord]:
        stmt = (self._insert(updates).on_conflict_do_nothing()
                .returning(updates.c.id))
        inserted: set[str] = set()
        released: list[UpdateRecord] = []
        for chunk in _chunks(records):
            batch = await self._released(conn, chunk)
            released.extend(batch)
            result = await conn.execute(stmt, [codec.record_params(r) for r in batch])
            inserted.update(result.scalars().all())
        # A batch may repeat an id: report each inserted record once.
        unique: dict[str, UpdateRecord] = {}
        for record in released:
            if record.id in inserted:
                unique.setdefault(record.id, record)
        return list(unique.values())

    async def write_pass(self, work: PassWrite) -> PassResult:
        """Everything one reconcile pass decided, in one transaction: new records first
        (the database refuses a second open update), then decisions, events, each
        rollout's state and status, and forgotten rollouts."""

        async def run(conn: AsyncConnection) -> PassResult:
            created = await self._insert_updates(conn, work.created) if work.created else []
            changed = await self._decide(conn, work.decisions) if work.decisions else []
            if work.events:
                await conn.execute(events.insert(), [_event_params(e) for e in work.events])
            if work.saves:
                await self._upsert_rollouts(conn, [_rollout_params(r) for r in work.saves])
            if work.deletes:
                await conn.execute(rollouts.delete().where(
                    rollouts.c.name.in_(list(work.deletes))))
            return PassResult(created, changed)

        if not (work.created or work.decisions or work.events or work.saves or work.deletes):
            return PassResult([], [])
        return await self._write(run)

    async def _released(self, conn: AsyncConnection, records: Sequence[UpdateRecord]
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

    def _select_updates(self) -> sa.Select[Any]:
        stmt = sa.select(updates)
        return stmt.with_for_update() if self._postgres else stmt

    async def _load(self, conn: AsyncConnection, column: sa.ColumnElement[Any],
                    keys: Sequence[Any], *extra: sa.ColumnElement[bool]) -> list[UpdateRecord]:
        found: list[UpdateRecord] = []
        for chunk in _chunks(sorted(keys)):
            rows = await conn.execute(self._select_updates()
                                      .where(column.in_(chunk), *extra).order_by(updates.c.id))
            found.extend(codec.record_from_row(row._mapping) for row in rows)
        return found

    async def _save(self, conn: AsyncConnection, records: Iterable[UpdateRecord],
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
            await conn.execute(
                updates.update().where(updates.c.id == sa.bindparam("_id"))
                .values({name: sa.bindparam(name) for name in fields}), params)

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
            by_id: dict[str, UpdateRecord] = {}
            correlated = {s.correlation_id for s in batch if s.correlation_id is not None}
            for record in await self._load(conn, updates.c.correlation_id, list(correlated)):
                by_id[record.id] = record
            legacy = {s.device for s in batch if s.correlation_id is None}
            for record in await self._load(conn, updates.c.device, list(legacy),
                                           updates.c.state.in_(OPEN_VALUES)):
                by_id[record.id] = record
            for device in sorted({s.device for s in batch if s.correlation_id is None
                                  and s.type in ROLLBACK_STATUSES}):
                row = (await conn.execute(
                    self._select_updates().where(updates.c.device == device)
                    .order_by(updates.c.created_at.desc(), updates.c.attempt.desc())
                    .limit(1))).first()
                if row is not None:
                    newest = codec.record_from_row(row._mapping)
                    by_id.setdefault(newest.id, newest)
            by_corr = {r.correlation_id: r.id for r in by_id.values()}
            by_device: dict[str, set[str]] = defaultdict(set)
            for record in by_id.values():
                by_device[record.device].add(record.id)

            originals = dict(by_id)
            outcomes: list[StatusOutcome] = []
            dirty: set[str] = set()
            for status in batch:
                try:
                    outcome = self._apply_one(status, by_id, by_corr, by_device)
                except Exception:  # one bad message must never lose the rest of the batch
                    outcome = StatusOutcome(status, None, None, INVALID)
                if outcome.after is not None:
                    by_id[outcome.after.id] = outcome.after
                    dirty.add(outcome.after.id)
                outcomes.append(outcome)
            await self._save(conn, (by_id[i] for i in sorted(dirty)), originals)
            return outcomes

        # A device's own report, stored by whichever replica its $share delivered it to.
        return await self._write(work, fenced=False)

    @staticmethod
    def _apply_one(status: Status, by_id: Mapping[str, UpdateRecord],
                   by_corr: Mapping[str, str],
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

    async def apply_decisions(self, items: Sequence[tuple[str, Decision]]) -> list[UpdateRecord]:
        """Applies controller decisions (record id, decision) in one transaction;
        returns the records that changed, in their final form."""
        if not items:
            return []

        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return await self._decide(conn, items)

        return await self._write(work)

    async def _decide(self, conn: AsyncConnection, items: Sequence[tuple[str, Decision]]
                      ) -> list[UpdateRecord]:
        by_id = {r.id: r for r in await self._load(conn, updates.c.id,
                                                   list({i for i, _ in items}))}
        originals = dict(by_id)
        changed: dict[str, UpdateRecord] = {}
        for record_id, decision in items:
            record = by_id.get(record_id)
            if record is None:
                continue
            transition = apply_decision(record, decision)
            if transition.record is not None:
                by_id[record_id] = changed[record_id] = transition.record
        await self._save(conn, changed.values(), originals)
        return list(changed.values())

    async def _records(self, stmt: sa.Select[Any]) -> list[UpdateRecord]:
        async def work(conn: AsyncConnection) -> list[UpdateRecord]:
            return [codec.record_from_row(row._mapping) for row in await conn.execute(stmt)]

        return await self._read(work)

    async def get_update(self, id: str) -> UpdateRecord | None:
        found = await self._records(sa.select(updates).where(updates.c.id == id))
        return found[0] if found else None

    async def updates_by_id(self, ids: Sequence[str]) -> list[UpdateRecord]:
        """The records with these ids (a leader reads back what followers settled)."""
        found: list[UpdateRecord] = []
        for chunk in _chunks(sorted(ids)):
            found += await self._records(sa.select(updates).where(updates.c.id.in_(chunk)))
        return found

    async def open_updates(self, rollout: str | None = None) -> list[UpdateRecord]:
        stmt = sa.select(updates).where(updates.c.state.in_(OPEN_VALUES))
        if rollout is not None:
            stmt = stmt.where(updates.c.rollout == rollout)
        return await self._records(stmt.order_by(updates.c.created_at, updates.c.id))

    async def rollout_updates(self, rollout: str) -> list[UpdateRecord]:
        """Every attempt of a rollout, oldest first."""
        return await self._records(sa.select(updates).where(updates.c.rollout == rollout)
                                   .order_by(updates.c.created_at, updates.c.attempt,
                                             updates.c.id))

    async def device_history(self, uuid: str, limit: int = 100) -> list[UpdateRecord]:
        """A device's update records, newest first."""
        return await self._records(
            sa.select(updates).where(updates.c.device == uuid)
            .order_by(updates.c.created_at.desc(), updates.c.attempt.desc(), updates.c.id.desc())
            .limit(limit))

    async def stale_updates(self, older_than_seconds: float, now: float,
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
        return await self._records(stmt if limit is None else stmt.limit(limit))

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

        return await self._read(work)

    async def update_stats(self, rollout: str | None = None) -> list[UpdateStats]:
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
            return [self._stats(key, rows) for key, rows in sorted(groups.items())]

        return await self._read(work)

    @staticmethod
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

    # -- rollouts -------------------------------------------------------------------------

    async def save_rollout(self, name: str, generation: int, spec_hash: str,
                           state: Mapping[str, Any], status: Mapping[str, Any], *,
                           now: float | None = None) -> None:
        """Stores (inserts or replaces) a rollout's engine state and status."""
        params = _rollout_params(RolloutSave(name, generation, spec_hash, state, status, now))

        async def work(conn: AsyncConnection) -> None:
            await self._upsert_rollouts(conn, [params])

        await self._write(work)

    async def _upsert_rollouts(self, conn: AsyncConnection,
                               params: Sequence[Mapping[str, Any]]) -> None:
        stmt = self._insert(rollouts)
        ex = stmt.excluded
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[rollouts.c.name],
            set_={"generation": ex.generation, "spec_hash": ex.spec_hash, "state": ex.state,
                  "status": ex.status, "updated_at": ex.updated_at}), list(params))

    async def load_rollouts(self) -> dict[str, RolloutRow]:
        async def work(conn: AsyncConnection) -> dict[str, RolloutRow]:
            rows = await conn.execute(sa.select(rollouts).order_by(rollouts.c.name))
            return {row.name: RolloutRow(name=row.name, generation=row.generation,
                                         spec_hash=row.spec_hash, state=dict(row.state),
                                         status=dict(row.status), updated_at=row.updated_at)
                    for row in rows}

        return await self._read(work)

    async def delete_rollout(self, name: str) -> None:
        """Forgets a rollout's state; its update records and events stay for the audit."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(rollouts.delete().where(rollouts.c.name == name))

        await self._write(work)

    # -- events ---------------------------------------------------------------------------

    async def append_events(self, new_events: Sequence[Event]) -> None:
        if not new_events:
            return
        params = [_event_params(e) for e in new_events]

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(events.insert(), params)

        await self._write(work)

    async def list_events(self, rollout: str, offset: int = 0, limit: int = 100) -> EventPage:
        """A page of a rollout's events, oldest first, with the total count."""

        async def work(conn: AsyncConnection) -> EventPage:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(events)
                                        .where(events.c.rollout == rollout))).scalar_one()
            rows = await conn.execute(sa.select(events).where(events.c.rollout == rollout)
                                      .order_by(events.c.id).offset(offset).limit(limit))
            return EventPage(items=[_event(row._mapping) for row in rows], total=int(total))

        return await self._read(work)

    # -- webhook deliveries ----------------------------------------------------------------

    async def first_delivery(self, key: str, now: float, expires_at: float) -> bool:
        """Remember a webhook delivery; False when `key` was already seen and has not expired.

        One transaction: expired rows go first (so the table holds only live keys), then
        an insert that does nothing on a conflict, so two racing copies of one delivery
        (two replicas, a sender's retry) cannot both be first.
        """

        async def work(conn: AsyncConnection) -> bool:
            await conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.expires_at <= now))
            result = await conn.execute(
                self._insert(webhook_deliveries).on_conflict_do_nothing()
                .values(key=key, received_at=now, expires_at=expires_at))
            return bool(result.rowcount)

        return await self._write(work)

    async def forget_delivery(self, key: str) -> None:
        """Undo `first_delivery` when acting on the delivery failed, so a retry may succeed."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.key == key))

        await self._write(work)

    # -- retention and export -------------------------------------------------------------

    async def prune(self, older_than_days: float, now: float) -> int:
        """Deletes terminal update records and events older than the cut-off; open updates
        stay whatever their age. Returns how many rows went."""
        cutoff = now - older_than_days * 86400.0

        async def work(conn: AsyncConnection) -> int:
            gone = await conn.execute(updates.delete().where(
                updates.c.state.in_(TERMINAL_VALUES), updates.c.updated_at < cutoff))
            old = await conn.execute(events.delete().where(events.c.time < cutoff))
            return int(gone.rowcount or 0) + int(old.rowcount or 0)

        return await self._write(work)

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
                "events": [codec.event_json(_event(e._mapping)) for e in device_events],
            }

        return await self._read(work)


def _event_params(e: Event) -> dict[str, Any]:
    return {"time": e.time, "rollout": e.rollout, "device": e.device, "type": e.type,
            "reason": e.reason, "message": e.message, "actor": e.actor}


def _rollout_params(save: RolloutSave) -> dict[str, Any]:
    return {"name": save.name, "generation": save.generation, "spec_hash": save.spec_hash,
            "state": dict(save.state), "status": dict(save.status),
            "updated_at": time.time() if save.now is None else save.now}


def _event(row: Mapping[Any, Any]) -> Event:
    return Event(time=row["time"], rollout=row["rollout"], type=row["type"],
                 reason=row["reason"], message=row["message"], device=row["device"],
                 actor=row["actor"], id=int(row["id"]))


