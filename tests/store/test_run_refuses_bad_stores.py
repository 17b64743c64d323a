"""`fleetwave run` on a store it cannot use: one clear line on stderr, exit 1, no traceback."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave.mqtt.broker import free_port
from fleetwave.runtime.keys import create_key_file
from fleetwave.store import open_store


def run_with_store(store: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetwave", "run", "--store", store, "--source", str(cwd),
         "--listen", f"127.0.0.1:{free_port()}", "--broker", f"mqtt://127.0.0.1:{free_port()}",
         *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def with_key(tmp: Path) -> tuple[str, ...]:
    key = tmp / "signing-key.pem"
    if not key.exists():
        create_key_file(key)
    return ("--signing-key", str(key))


def newer_schema_db(path: Path) -> str:
    url = f"sqlite:///{path}"

    async def migrate() -> None:
        store = open_store(url)
        await store.migrate()
        await store.close()

    asyncio.run(migrate())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffff9999'")
    return url


@pytest.mark.parametrize(("store", "says"), [
    pytest.param(lambda tmp: f"postgresql://nobody@127.0.0.1:{free_port()}/fleet",
                 "cannot reach the database", id="unreachable-postgresql"),
    pytest.param(lambda tmp: f"postgresql://nobody@127.0.0.1:{free_port()}/fleet",
                 "needs --signing-key FILE", id="postgresql-without-a-signing-key"),
    pytest.param(lambda tmp: f"sqlite:///{tmp}/missing/dir/fleet.db",
                 "directory does not exist", id="sqlite-in-a-missing-folder"),
    pytest.param(lambda tmp: newer_schema_db(tmp / "newer.db"),
                 "newer than this fleetwave knows", id="newer-schema"),
    pytest.param(lambda tmp: "mysql://fleet@localhost/fleet",
                 "unsupported store URL", id="unsupported-scheme"),
])
def test_one_line_and_exit_1(tmp_path: Path, store: object, says: str) -> None:
    url = store(tmp_path)  # type: ignore[operator]
    keyless = "signing-key" in says
    result = run_with_store(url, tmp_path, *(() if keyless else with_key(tmp_path)))
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("fleetwave:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr
