"""`action: download` on a real agent process: fetch and verify ahead, install later from it.

The agent runs as `fleetwave agent` on real directories, against a real Mosquitto and a
real HTTP artifact server that records every request, so "the install used the cached
file" is seen as the absence of a second GET.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.agent.test_downloads import tiny_tmpfs
from tests.agent.world import World, files_component, install_version, tar_of
from tests.support.processes import wait_until


def _app(world: World) -> Path:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    return target


def test_a_download_fetches_and_verifies_and_the_install_then_uses_the_cached_file(
        world: World) -> None:
    target = _app(world)
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    download = world.controller.command("dev-1", "2.0.0", action="download", url=url, sha=sha)
    world.controller.send("dev-1", download)
    final = world.final(agent, download["correlation_id"])
    assert final["type"] == "download_succeeded" and final["version"] == "2.0.0"
    assert world.controller.types("dev-1", download["correlation_id"]) == [
        "update_command_received", "download_succeeded"]
    cached = Path(agent.config["stateDir"]) / "downloads" / sha
    assert cached.exists()
    assert (target / "current" / "app.txt").read_text() == "one"  # nothing installed
    assert world.controller.version("dev-1") == "1.0.0"
    assert [r[0] for r in world.artifacts.requests] == ["app-2.tar.gz"]

    install = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)  # higher release
    world.controller.send("dev-1", install)
    assert world.final(agent, install["correlation_id"])["type"] == "update_succeeded"
    assert (target / "current" / "app.txt").read_text() == "two"
    assert [r[0] for r in world.artifacts.requests] == ["app-2.tar.gz"]  # no second fetch
    assert not cached.exists()  # used, then removed like every installed artifact
    assert agent.stop() == 0


def test_a_cached_file_that_changed_on_disk_is_fetched_again(world: World) -> None:
    """The install hashes the cached file again: a corrupted one is not installed."""
    target = _app(world)
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    download = world.controller.command("dev-1", "2.0.0", action="download", url=url, sha=sha)
    world.controller.send("dev-1", download)
    assert world.final(agent, download["correlation_id"])["type"] == "download_succeeded"
    cached = Path(agent.config["stateDir"]) / "downloads" / sha
    cached.write_bytes(b"bit rot")
    install = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", install)
    assert world.final(agent, install["correlation_id"])["type"] == "update_succeeded"
    assert (target / "current" / "app.txt").read_text() == "two"
    assert [r[0] for r in world.artifacts.requests] == ["app-2.tar.gz", "app-2.tar.gz"]


def test_a_download_with_the_wrong_checksum_fails_and_keeps_nothing(world: World) -> None:
    target = _app(world)
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, _ = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    download = world.controller.command("dev-1", "2.0.0", action="download", url=url,
                                        sha="0" * 64)
    world.controller.send("dev-1", download)
    final = world.final(agent, download["correlation_id"])
    assert final["type"] == "download_failed" and final["reason"] == "checksum"
    assert list((Path(agent.config["stateDir"]) / "downloads").iterdir()) == []
    assert (target / "current" / "app.txt").read_text() == "one"


def test_a_download_onto_a_full_disk_is_reported_disk_full(world: World) -> None:
    """stateDir is a real 1 MiB tmpfs; the artifact is 3 MB of random bytes."""
    target = _app(world)
    with tiny_tmpfs(world.root / "small-disk") as disk:
        agent = world.agent("dev-1", {"app": files_component(target)},
                            stateDir=str(disk / "state"))
        url, sha = world.artifacts.add("big.tar.gz", tar_of({"blob": os.urandom(3 * 10**6)}))
        download = world.controller.command("dev-1", "2.0.0", action="download", url=url,
                                            sha=sha)
        world.controller.send("dev-1", download)
        final = world.final(agent, download["correlation_id"])
        assert final["type"] == "download_failed" and final["reason"] == "disk_full"
        assert world.controller.version("dev-1") == "1.0.0"
        agent.stop()


def test_a_download_killed_midway_resumes_after_the_restart(world: World) -> None:
    target = _app(world)
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"blob": os.urandom(400_000)}))
    world.artifacts.delay_per_chunk = 0.02  # ~2 s for the whole file
    download = world.controller.command("dev-1", "2.0.0", action="download", url=url, sha=sha)
    world.controller.send("dev-1", download)
    part = Path(agent.config["stateDir"]) / "downloads" / f"{sha}.part"
    wait_until(lambda: part.exists() and part.stat().st_size > 100_000, 20,
               lambda: f"the download never got under way:\n{agent.log_tail()}")
    agent.kill()
    world.artifacts.delay_per_chunk = 0.0
    agent.start()
    final = world.final(agent, download["correlation_id"])
    assert final["type"] == "download_succeeded"
    ranges = [r[1] for r in world.artifacts.requests]
    assert ranges[0] is None and any(r is not None and r.startswith("bytes=") for r in ranges)
    assert (Path(agent.config["stateDir"]) / "downloads" / sha).exists()
