"""Migrations: idempotent, identical on both backends, and enforcing the one-open rule."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fleetwave.store import Store, open_store
from fleetwave.store.codec import record_params
from fleetwave.store.database import MIGRATIONS
from fleetwave.store.schema import metadata, updates
from tests.store.records import update


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"migrations must form one chain, found heads {heads}"
    return heads[0]


async def test_migrate_twice_is_a_no_op(store: Store) -> None:
    await store.migrate()
    await store.migrate()
    assert await store.schema_revision() == head_revision() is not None


async def test_migrations_produce_exactly_the_schema_the_code_queries(store: Store) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_database_refuses_a_second_open_update_even_past_the_code(store: Store) -> None:
    """The partial unique index, not the store's code, is the last line of defence."""
    async with store.engine.begin() as conn:
        await conn.execute(updates.insert(), record_params(update("u1")))
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(updates.insert(), record_params(update("u2")))
    # A closed update leaves room for a new open one on the same device and component.
    async with store.engine.begin() as conn:
        await conn.execute(updates.update().values(state="failed"))
        await conn.execute(updates.insert(), record_params(update("u2")))
        count = (await conn.execute(sa.select(sa.func.count()).select_from(updates))).scalar()
    assert count == 2


async def test_in_memory_sqlite_works_for_trying_things_out() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        await store.migrate()
        assert await store.updates.create([update()]) == [update()]
        assert await store.updates.get("u1") == update()
    finally:
        await store.close()
