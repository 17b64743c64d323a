"""The agent updating itself (seed 001), with real processes: `fleetwave agent --supervise`
runs the agent program from a `files`-handled directory; a new version must start and
confirm within confirmTimeout, or the supervisor puts the previous one back."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.agent.world import AgentProcess, World, install_version, tar_of
from tests.support.processes import wait_until


def launcher(config: Path, log: Path, version: str) -> str:
    """The agent program of one version: says it started, then runs the real agent."""
    return (f'#!/bin/sh\necho "{version} started" >> "{log}"\n'
            f'exec "{sys.executable}" -m fleetwave.agent --config "{config}" "$@"\n')


def supervised(world: World) -> tuple[AgentProcess, Path, Path]:
    target = world.root / "agent-install"
    root = world.root / "dev-1"
    root.mkdir()
    config, started = root / "agent.yaml", world.root / "started.log"
    install_version(target, "1.0.0", {})
    run = target / "versions" / "1.0.0" / "run"
    run.write_text(launcher(config, started, "1.0.0"))
    run.chmod(0o755)
    agent = world.agent("dev-1", {"agent": {
        "version": "1.0.0", "handler": "files", "files": {"target": str(target)},
        "selfUpdate": True, "exec": [str(target / "current" / "run")]}},
        start=False, confirmTimeout=6)
    agent.start("--supervise")
    world.wait_online(agent)
    return agent, target, started


def release(world: World, version: str, run_script: str) -> tuple[str, str]:
    return world.artifacts.add(f"agent-{version}.tar",
                               tar_of({"run": run_script}, mode=0o755))


def test_a_new_agent_confirms_itself_after_it_starts(world: World) -> None:
    agent, target, started = supervised(world)
    url, sha = release(world, "2.0.0", launcher(agent.config_path, started, "2.0.0"))
    body = world.controller.command("dev-1", "2.0.0", component="agent", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_succeeded" and final["version"] == "2.0.0"
    assert started.read_text().splitlines() == ["1.0.0 started", "2.0.0 started"]
    assert os.readlink(target / "current") == "versions/2.0.0"
    types = world.controller.types("dev-1", body["correlation_id"])
    assert types.index("update_progress") < types.index("update_succeeded")
    wait_until(lambda: world.controller.version("dev-1", "agent") == "2.0.0", 10, "state")


def test_a_new_agent_that_crashes_is_replaced_by_the_old_one_after_the_timeout(
        world: World) -> None:
    agent, target, started = supervised(world)
    url, sha = release(world, "2.0.0", f'#!/bin/sh\necho "2.0.0 crashed" >> "{started}"\n'
                                       "exit 3\n")
    body = world.controller.command("dev-1", "2.0.0", component="agent", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"], timeout=60)
    assert (final["type"], final["reason"]) == ("update_failed", "not_confirmed")
    assert "previous version 1.0.0 restored" in final["error"]
    assert os.readlink(target / "current") == "versions/1.0.0"
    lines = started.read_text().splitlines()
    assert lines[0] == "1.0.0 started" and lines[-1] == "1.0.0 started"
    assert "2.0.0 crashed" in lines
    wait_until(lambda: world.controller.online.get("dev-1") is True
             and world.controller.version("dev-1", "agent") == "1.0.0", 20, "old not back")


def test_a_new_agent_that_hangs_without_confirming_is_stopped_and_replaced(
        world: World) -> None:
    agent, target, started = supervised(world)
    url, sha = release(world, "2.0.0", f'#!/bin/sh\necho "2.0.0 hangs" >> "{started}"\n'
                                       "exec sleep 600\n")
    body = world.controller.command("dev-1", "2.0.0", component="agent", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"], timeout=60)
    assert final["reason"] == "not_confirmed"
    assert os.readlink(target / "current") == "versions/1.0.0"
    assert started.read_text().splitlines() == ["1.0.0 started", "2.0.0 hangs",
                                                "1.0.0 started"]
