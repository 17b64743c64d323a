"""PostgreSQL for tests: a real server, a fresh database per test, and the `store` fixture.

`scripts/test` starts a throwaway cluster and exports FLEETWAVE_TEST_POSTGRES_URL;
when that is unset (a developer running pytest directly) this module starts its
own cluster for the session with initdb/pg_ctl, as the `postgres` user when run
as root. Store tests never skip: PostgreSQL is a supported backend, so a missing
server is a failure, not a reason to test less.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fleetwave.store import Store, open_store

ENV = "FLEETWAVE_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def _bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install the "
                       "Debian package postgresql, or set " + ENV)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A cluster of our own on a free port, which a test may stop and start again (a
    PostgreSQL restart mid-rollout) without disturbing the session's server."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="fleetwave-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.data = self.root / "data"
        self.url = f"postgresql://fleetwave@127.0.0.1:{self.port}/fleetwave"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_user, str(self.bindir / tool), *args], check=check,
                       capture_output=True)

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "fleetwave",
                  "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "fleetwave",
                  "fleetwave")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Starts a private cluster on a free port; yields its URL; stops and deletes it."""
    with private_cluster() as cluster:
        yield cluster.url


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Creates an empty database on the server; yields its URL; drops it afterwards."""
    name = f"fw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for the session: the one scripts/test started, or our own."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    with throwaway_cluster() as started:
        yield started


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A URL to a brand-new, empty database, dropped after the test."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file in tmp_path, or a fresh PostgreSQL
    database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleetwave.db'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    with fresh_database(server) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store on each backend, closed after the test."""
    opened = open_store(store_url)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()
