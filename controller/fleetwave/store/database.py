"""The store's core: one async engine, its transactions, the fence and the schema.

Every part of the store (devices, update records, rollouts, events, deliveries, leases)
runs its SQL through `Database.write` or `Database.read`, so retries on a PostgreSQL
deadlock, the leader's fence, the SQLite write lock and the translation of driver errors
into `StoreError` live in one place. SQL that runs inside a caller's transaction takes
an `AsyncConnection` (as `leadership.py` and `records.py` do), so one transaction can
span parts.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from sqlalchemy.sql.compiler import SQLCompiler

from fleetwave.store.errors import Fenced, StoreError, StoreFull, translate

if TYPE_CHECKING:
    from fleetwave.store.leadership import Fence

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
CHUNK = 500
"""Ids per `IN (...)` query: far below SQLite's and PostgreSQL's bind-parameter limits."""
RETRIES = 5
"""Attempts of a batch that PostgreSQL aborted as a deadlock or serialization failure."""
MIGRATION_LOCK = 0x666C_7477_6176_65
"""PostgreSQL advisory lock key held while migrating, so two replicas never race."""


def connect(url: str, *, lock_timeout: float, pool_size: int
            ) -> tuple[AsyncEngine, str, Path | None]:
    """The engine for `url`, where it points (for messages) and the SQLite file, if any."""
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
        return engine, database, None if memory else Path(database)
    if backend in ("postgresql", "postgres"):
        target = parsed.set(drivername="postgresql+psycopg")
        engine = create_async_engine(
            target, pool_size=pool_size, pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(lock_timeout)),
                          "options": f"-c lock_timeout={int(lock_timeout * 1000)}"})
        where = target.render_as_string(hide_password=True).replace(
            "postgresql+psycopg", "postgresql")
        return engine, where, None
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


def insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's INSERT for `table`, which has `on_conflict_do_*` on both backends."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


_COMPILED: dict[tuple[str, str, tuple[str, ...]], tuple[str, Callable[[Any], Any]]] = {}


async def execute_many(conn: AsyncConnection, name: str,
                       build: Callable[[AsyncConnection], sa.ClauseElement],
                       rows: Sequence[Mapping[str, Any]]) -> None:
    """`conn.execute(build(conn), rows)` through the driver's executemany, compiled once
    per `name`, dialect and set of keys. SQLAlchemy's per-row parameter processing (type
    coercion, JSON encoding) cost as much as SQLite's own work on the ingest path, so the
    rows hold what the driver takes as it is: JSON columns as encoded text."""
    if not rows:
        return
    keys = tuple(rows[0])
    held = _COMPILED.get((name, conn.dialect.name, keys))
    if held is None:
        compiled = build(conn).compile(dialect=conn.dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        order = compiled.positiontup
        if not order:  # a named paramstyle (psycopg): the rows go as they are
            held = (str(compiled), dict)
        else:
            pick = operator.itemgetter(*order)
            held = (str(compiled), pick if len(order) > 1 else lambda row: (pick(row),))
        _COMPILED[(name, conn.dialect.name, keys)] = held
    sql, values = held
    await conn.exec_driver_sql(sql, list(map(values, rows)))


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Database:
    """One engine's transactions, shared by every part of the store."""

    def __init__(self, engine: AsyncEngine, *, where: str, path: Path | None = None) -> None:
        self._engine = engine
        self._where = where
        self._path = path
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
        """The SQLAlchemy engine, for tests and diagnostics; code uses the parts."""
        return self._engine

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    @property
    def path(self) -> Path | None:
        """The SQLite database file (None in memory and on PostgreSQL)."""
        return self._path

    def set_fence(self, fence: Fence | None) -> None:
        """Make every later write conditional on `fence` (None: unfenced, a single writer)."""
        self._fence = fence

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]], *,
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

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
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

        await self.write(work, fenced=False)

    def _upgrade(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
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

        return await self.read(work)
