"""Downloads over a real HTTP server: resumed after a break, bounded in size and time, and
a full disk (a real 1 MiB tmpfs, mounted by the test as root) reported, not crashed on."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwave.agent.download import fetch
from fleetwave.agent.failures import Reason, UpdateFailure
from tests.agent.world import (
    ArtifactServer,
    World,
    files_component,
    install_version,
    tar_of,
)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    s = ArtifactServer()
    yield s
    s.close()


def test_a_download_cut_off_midway_resumes_with_a_range_request(
        tmp_path: Path, server: ArtifactServer) -> None:
    data = os.urandom(300_000)
    url, sha = server.add("a.bin", data)
    server.truncate_once.add("a.bin")
    path = fetch(url, sha, tmp_path, max_bytes=10**6, timeout=5)
    assert path.read_bytes() == data
    assert server.requests[0] == ("a.bin", None)
    assert server.requests[1] == ("a.bin", "bytes=150000-")


def test_a_download_larger_than_the_bound_is_refused_before_it_is_read(
        tmp_path: Path, server: ArtifactServer) -> None:
    url, sha = server.add("big.bin", os.urandom(200_000))
    with pytest.raises(UpdateFailure) as caught:
        fetch(url, sha, tmp_path, max_bytes=100_000, timeout=5)
    assert caught.value.reason is Reason.TOO_LARGE
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_stalls_is_given_up_after_the_timeout(
        tmp_path: Path, server: ArtifactServer) -> None:
    url, sha = server.add("slow.bin", os.urandom(50_000))
    server.delay_per_chunk = 3.0
    with pytest.raises(UpdateFailure) as caught:
        fetch(url, sha, tmp_path, max_bytes=10**6, timeout=0.5, attempts=2)
    assert caught.value.reason is Reason.DOWNLOAD
    assert "failed after 2 attempts" in str(caught.value)


def test_a_missing_artifact_and_a_bad_url_are_download_failures(
        tmp_path: Path, server: ArtifactServer) -> None:
    for url in (server.url("absent"), "ftp://example.com/x", "file:///etc/passwd"):
        with pytest.raises(UpdateFailure) as caught:
            fetch(url, "0" * 64, tmp_path, max_bytes=10**6, timeout=2, attempts=1)
        assert caught.value.reason is Reason.DOWNLOAD


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_reported_and_the_device_stays_on_its_version(world: World) -> None:
    """stateDir is a real 1 MiB tmpfs; the artifact is 3 MB of random bytes."""
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    with tiny_tmpfs(world.root / "small-disk") as disk:
        agent = world.agent("dev-1", {"app": files_component(target)},
                            stateDir=str(disk / "state"))
        url, sha = world.artifacts.add("app-2.tar.gz",
                                       tar_of({"app.txt": "two", "blob": os.urandom(3 * 10**6)}))
        body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
        world.controller.send("dev-1", body)
        final = world.final(agent, body["correlation_id"])
        assert final["type"] == "update_failed" and final["reason"] == "disk_full"
        assert (target / "current" / "app.txt").read_text() == "one"
        assert world.controller.version("dev-1") == "1.0.0"
        # the agent keeps working: a small update fits
        url, sha = world.artifacts.add("app-3.tar.gz", tar_of({"app.txt": "three"}))
        body = world.controller.command("dev-1", "3.0.0", url=url, sha=sha)
        world.controller.send("dev-1", body)
        assert world.final(agent, body["correlation_id"])["type"] == "update_succeeded"
        assert (target / "current" / "app.txt").read_text() == "three"
        agent.stop()


def test_an_artifact_over_max_artifact_bytes_is_reported_too_large(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)}, maxArtifactBytes=1000)
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"blob": os.urandom(5000)}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["reason"] == "too_large"
    assert (target / "current" / "app.txt").read_text() == "one"


def test_a_disk_too_full_for_the_journal_acts_on_nothing_and_says_so(world: World) -> None:
    """stateDir is a real 1 MiB tmpfs, filled to the last byte after the agent started."""
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    with tiny_tmpfs(world.root / "small-disk") as disk:
        agent = world.agent("dev-1", {"app": files_component(target)},
                            stateDir=str(disk / "state"))
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
        body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
        world.controller.send("dev-1", body)
        final = world.final(agent, body["correlation_id"])
        assert final["type"] == "update_failed" and final["reason"] == "disk_full"
        assert "No space left" in final["error"]
        assert "update_command_received" not in world.controller.types(
            "dev-1", body["correlation_id"])  # not journalled, so not acknowledged
        assert (target / "current" / "app.txt").read_text() == "one"
        filler.unlink()
        retry = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
        world.controller.send("dev-1", retry)
        assert world.final(agent, retry["correlation_id"])["type"] == "update_succeeded"
        assert (target / "current" / "app.txt").read_text() == "two"
        agent.stop()
