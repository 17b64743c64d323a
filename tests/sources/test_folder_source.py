"""The local folder source, and the snapshot rules both sources share."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from fleetwave.metrics import build_metrics
from fleetwave.sources.base import Backoff, Source, SourceSnapshot
from fleetwave.sources.folder import FolderSource
from tests.sources.documents import BROKEN_FIELD, BROKEN_LINE, broken_rollout, rollout


def write(folder: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        target = folder / rel
        if text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            # Make the change visible to the mtime check even within one clock tick.
            st = target.stat()
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def test_reads_rollouts_with_folder_source_refs(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0"), "sub/b.yml": rollout("b", "1.0.0"),
                     ".hidden/c.yaml": rollout("c", "1.0.0"), "notes.txt": "x"})
    source = FolderSource(tmp_path)
    assert isinstance(source, Source)
    snap = await source.sync()
    assert set(snap.rollouts) == {"a", "b"} and snap.ok
    ref = snap.rollouts["b"].source
    assert (ref.kind, ref.revision, ref.path) == ("folder", snap.revision, "sub/b.yml")


async def test_revision_is_a_content_digest(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0")})
    first = await FolderSource(tmp_path).sync()
    again = await FolderSource(tmp_path).sync()
    write(tmp_path, {"a.yaml": rollout("a", "1.0.1")})
    changed = await FolderSource(tmp_path).sync()
    assert first.revision == again.revision != changed.revision


async def test_invalid_file_keeps_last_version_removed_file_stops(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0"), "b.yaml": rollout("b", "1.0.0")})
    source = FolderSource(tmp_path)
    first = await source.sync()
    write(tmp_path, {"a.yaml": broken_rollout("a"), "b.yaml": None})
    snap = await source.sync()
    assert set(snap.rollouts) == {"a"}
    assert snap.rollouts["a"].spec.version == "1.0.0"
    assert snap.rollouts["a"].source.revision == first.revision
    [problem] = snap.problems
    assert (problem.file, problem.line, problem.field) == ("a.yaml", BROKEN_LINE, BROKEN_FIELD)


async def test_duplicates_when_neither_ran_before_run_neither(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("x", "1.0.0"), "b.yaml": rollout("x", "2.0.0")})
    snap = await FolderSource(tmp_path).sync()
    assert snap.rollouts == {}
    assert {p.file for p in snap.problems} == {"a.yaml", "b.yaml"}


async def test_generation_counts_spec_changes_and_accepts_a_seed(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0")})
    source = FolderSource(tmp_path, generations={"a": (7, "old-hash")})
    assert (await source.sync()).rollouts["a"].generation == 8
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0") + "\n# a comment only\n"})
    assert (await source.sync()).rollouts["a"].generation == 8
    write(tmp_path, {"a.yaml": rollout("a", "1.0.1")})
    snap = await source.sync()
    assert snap.rollouts["a"].generation == 9
    assert snap.generations["a"][0] == 9
    write(tmp_path, {"a.yaml": None})
    await source.sync()
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0")})
    assert (await source.sync()).rollouts["a"].generation == 10  # re-added: a new generation


async def test_missing_folder_is_an_error_with_back_off_and_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "rollouts"
    write(folder, {"a.yaml": rollout("a", "1.0.0")})
    registry = CollectorRegistry()
    source = FolderSource(folder, backoff=Backoff(initial=1, maximum=4),
                          metrics=build_metrics(registry))
    await source.sync()
    (folder / "a.yaml").unlink()
    folder.rmdir()
    delays = []
    for _ in range(4):
        snap = await source.sync()
        delays.append(source.next_delay())
    assert snap.error is not None and "does not exist" in snap.error
    assert set(snap.rollouts) == {"a"}
    assert delays == [1, 2, 4, 4]
    labels = {"source": str(folder)}
    assert registry.get_sample_value("fleetwave_source_sync_errors_total", labels) == 4
    assert registry.get_sample_value("fleetwave_source_invalid_files", labels) == 0
    last = registry.get_sample_value("fleetwave_source_last_sync_timestamp_seconds", labels)
    assert last is not None and last > 0


async def test_run_picks_up_edits_and_stops(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": rollout("a", "1.0.0")})
    source = FolderSource(tmp_path, poll_interval=0.05)
    seen: asyncio.Queue[SourceSnapshot] = asyncio.Queue()

    async def on_snapshot(snap: SourceSnapshot) -> None:
        await seen.put(snap)

    stop = asyncio.Event()
    task = asyncio.create_task(source.run(on_snapshot, stop))
    async with asyncio.timeout(5):
        assert set((await seen.get()).rollouts) == {"a"}
        write(tmp_path, {"b.yaml": rollout("b", "1.0.0")})
        assert set((await seen.get()).rollouts) == {"a", "b"}
        stop.set()
        await task
