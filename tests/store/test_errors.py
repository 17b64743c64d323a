"""What an operator sees when the database is unreachable, locked or too new: one line."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleetwave.store import Store, StoreError, open_store
from tests.store.records import update


def assert_one_clear_line(error: StoreError, *words: str) -> None:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    for word in words:
        assert word in text, text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_postgresql_is_one_line() -> None:
    store = open_store(f"postgresql://fleetwave:secret@127.0.0.1:{closed_port()}/fleetwave",
                       lock_timeout=2)
    try:
        with pytest.raises(StoreError) as caught:
            await store.migrate()
    finally:
        await store.close()
    assert_one_clear_line(caught.value, "cannot reach the database", "127.0.0.1")
    assert "secret" not in str(caught.value)
    assert caught.value.retry


async def test_locked_sqlite_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fleetwave.db"
    store = open_store(f"sqlite:///{path}", lock_timeout=0.3)
    await store.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            await store.updates.create([update()])
        assert time.monotonic() - started >= 0.25
        holder.execute("ROLLBACK")
        # Once the other writer is gone the same store works again.
        assert await store.updates.create([update()]) == [update()]
    finally:
        holder.close()
        await store.close()
    assert_one_clear_line(caught.value, "locked", str(path))


async def test_newer_schema_is_refused(store: Store, store_url: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    newer = open_store(store_url)
    try:
        with pytest.raises(StoreError) as caught:
            await newer.migrate()
    finally:
        await newer.close()
    assert_one_clear_line(caught.value, "9999", "newer", "upgrade fleetwave")
    assert not caught.value.retry
    # Refusing touched nothing.
    async with store.engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                   ).scalar()
    assert version == "9999"


async def test_sqlite_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'missing' / 'fleetwave.db'}")
    try:
        with pytest.raises(StoreError) as caught:
            await store.migrate()
    finally:
        await store.close()
    assert_one_clear_line(caught.value, "cannot open the SQLite database", "missing")


@pytest.mark.parametrize("url", [
    pytest.param("mysql://root@localhost/fleetwave", id="unsupported-scheme"),
    pytest.param("not a url", id="garbage"),
])
def test_bad_store_urls_are_one_line(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert_one_clear_line(caught.value, "sqlite:///path.db")
