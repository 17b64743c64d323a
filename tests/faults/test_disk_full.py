"""A SQLite volume that fills up: `fleetwave run` stops with one clear error (exit 1), and the
database it leaves passes SQLite's integrity check.

A real tmpfs of 2 MiB (the tests run as root), a real controller and simulated devices whose
reports fill it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "volume"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(volume: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the volume with a filler file."""
    stats = os.statvfs(volume)
    free = stats.f_bavail * stats.f_frsize
    filler = volume / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_volume_stops_the_controller_with_one_clear_error(
        tmp_path: Path, small_volume: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    database = small_volume / "fleetwave.db"
    controller = controller_factory(source, store=f"sqlite:///{database}")
    controller.start()  # migrated: the schema fits, the fleet will not
    filler = fill(small_volume, leave=48 * 1024)
    simulator_factory(3000, "--seed", "7")
    assert controller.proc is not None
    proc = controller.proc
    wait_until(lambda: proc.poll() is not None, 90,
               lambda: f"the controller kept running on a full disk: {controller.tail()}")
    controller.proc = None
    log = controller.log.read_text(errors="replace")
    assert proc.returncode == 1, log[-3000:]
    assert "Traceback" not in log
    full = [line for line in log.splitlines() if "is full" in line]
    assert len(full) == 1, full
    assert "free space or move --store" in full[0] and str(database) in full[0]
    filler.unlink()
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM devices").fetchone()[0] >= 0
