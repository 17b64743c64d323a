"""kill -9 in the middle of an update, and the journal that makes the agent truthful after
the restart. Real agent processes, killed with SIGKILL while a real install or health
program blocks on a fifo, then started again on the same stateDir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.agent.world import World, files_component, install_version, script, tar_of
from tests.support.processes import wait_until


def blocking_script(path: Path, fifo: Path, started: Path, skip_if: Path | None = None) -> Path:
    """A program that says it started, then blocks reading `fifo` (until the test writes)."""
    os.mkfifo(fifo)
    guard = f'[ -e "{skip_if}" ] && exit 0\ntouch "{skip_if}"\n' if skip_if else ""
    return script(path, f'{guard}touch "{started}"\nread line < "{fifo}"\n')


def test_killed_during_install_restarts_on_the_previous_version_and_reports_interrupted(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    started = world.root / "install-started"
    hook = blocking_script(world.root / "install.sh", world.root / "fifo", started)
    agent = world.agent("dev-1", {"app": files_component(target, install=[str(hook)])})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    wait_until(started.exists, 20, lambda: f"install never started\n{agent.log_tail()}")
    assert os.readlink(target / "current") == "versions/2.0.0"  # mid-install: swapped
    journal = json.loads((world.root / "dev-1" / "state" / "journal.json").read_text())
    assert journal["attempts"][0]["phase"] == "installing"
    agent.kill()
    assert world.controller.final("dev-1", body["correlation_id"]) is None
    agent.start()
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_failed" and final["reason"] == "interrupted"
    assert "previous version 1.0.0 restored" in final["error"]
    assert os.readlink(target / "current") == "versions/1.0.0"
    assert (target / "current" / "app.txt").read_text() == "one"
    wait_until(lambda: world.controller.version("dev-1") == "1.0.0", 10, "state not 1.0.0")
    assert "update_succeeded" not in world.controller.types("dev-1", body["correlation_id"])


def test_killed_during_the_health_check_checks_again_after_the_restart(world: World) -> None:
    """Installed but not yet seen healthy: success only after a health check passes in the
    restarted agent."""
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    started = world.root / "health-started"
    checks = world.root / "checks"
    health = blocking_script(world.root / "health.sh", world.root / "fifo", started,
                             skip_if=world.root / "checked-once")
    logged = script(world.root / "logged-health.sh",
                    f'echo run >> "{checks}"\nexec "{health}"\n')
    agent = world.agent("dev-1", {"app": files_component(target, healthCheck=[str(logged)])})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    wait_until(started.exists, 20, lambda: f"health check never started\n{agent.log_tail()}")
    agent.kill()
    agent.start()
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_succeeded" and final["version"] == "2.0.0"
    assert checks.read_text().splitlines() == ["run", "run"]  # once per process
    assert (target / "current" / "app.txt").read_text() == "two"


def test_killed_during_a_download_resumes_it_after_the_restart(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    payload = tar_of({"app.txt": "two", "blob.bin": os.urandom(400_000)})
    url, sha = world.artifacts.add("app-2.tar.gz", payload)
    world.artifacts.delay_per_chunk = 0.01
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    part = world.root / "dev-1" / "state" / "downloads" / f"{sha}.part"
    wait_until(lambda: part.exists() and part.stat().st_size > 40_000, 20, "download not started")
    agent.kill()
    world.artifacts.delay_per_chunk = 0.0
    agent.start()
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_succeeded"
    ranges = [r for name, r in world.artifacts.requests if name == "app-2.tar.gz"]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert (target / "current" / "app.txt").read_text() == "two"
