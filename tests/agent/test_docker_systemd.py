"""The `docker` and `systemd` handlers, in a real agent process, against stand-in `docker`
and `systemctl` executables put first on PATH: no Docker engine and no systemd can run on
these machines. The stand-ins log their argv and answer like the real ones (exit codes,
`true`/`active`), and the tests assert the exact command sequences of seed 001's flows,
including the rollback paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.agent.world import AgentProcess, World, script, sha256
from tests.support.processes import wait_until

DIGEST = "sha256:" + "ab" * 32
DOCKER = """\
echo "docker $*" >> "$STANDIN_LOG"
case "$1 $2" in
  "inspect -f")
    if [ -e "$STANDIN_DIR/not-running-once" ]; then rm "$STANDIN_DIR/not-running-once"
      echo false; else echo true; fi ;;
  "container inspect") echo '[{"Name": "/app"}]' ;;
  "pull "*) if [ -e "$STANDIN_DIR/pull-fails" ]; then
      echo "Error response from daemon: manifest unknown" >&2; exit 1; fi ;;
esac
exit 0
"""
SYSTEMCTL = """\
echo "systemctl $*" >> "$STANDIN_LOG"
if [ "$1" = is-active ]; then
  if [ -e "$STANDIN_DIR/inactive-once" ]; then rm "$STANDIN_DIR/inactive-once"
    echo inactive; exit 3; fi
  echo active
fi
exit 0
"""


def stand_ins(world: World) -> tuple[dict[str, str], Path, Path]:
    bin_dir = world.root / "stand-in-bin"
    bin_dir.mkdir()
    script(bin_dir / "docker", DOCKER)
    script(bin_dir / "systemctl", SYSTEMCTL)
    log = world.root / "commands.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STANDIN_LOG": str(log),
           "STANDIN_DIR": str(world.root)}
    return env, log, world.root


class Commands:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.seen = 0

    def new(self) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        fresh, self.seen = lines[self.seen:], len(lines)
        return fresh


def update(world: World, agent: AgentProcess, version: str, **kw: Any) -> dict[str, Any]:
    body = world.controller.command(agent.device, version, **kw)
    world.controller.send(agent.device, body)
    return world.final(agent, body["correlation_id"])


def docker_agent(world: World) -> tuple[AgentProcess, Commands, Path]:
    env, log, flags = stand_ins(world)
    agent = world.agent("dev-1", {"app": {
        "version": "1.0.0", "handler": "docker",
        "docker": {"container": "app", "image": "acme/app", "runArgs": ["-p", "8080:80"]}}},
        env=env)
    return agent, Commands(log), flags


PULL = f"docker pull acme/app@{DIGEST}"
RUN = f"docker run -d --name app -p 8080:80 acme/app@{DIGEST}"
RUNNING = "docker inspect -f {{.State.Running}} app"


def test_docker_pulls_by_digest_renames_runs_and_checks(world: World) -> None:
    agent, commands, _ = docker_agent(world)
    final = update(world, agent, "2.0.0", component="app", digest=DIGEST)
    assert final["type"] == "update_succeeded"
    assert commands.new() == [PULL, "docker container inspect app", "docker stop app",
                              "docker rename app app-backup-1.0.0", RUN, RUNNING]
    state = world.controller.states["dev-1"]
    assert state["deployment_type"] == "docker"
    assert state["containers"] == [{"name": "app", "running": True, "image": "acme/app:2.0.0"}]


def test_docker_restores_the_old_container_when_the_new_one_does_not_run(
        world: World) -> None:
    agent, commands, flags = docker_agent(world)
    (flags / "not-running-once").touch()
    final = update(world, agent, "2.0.0", digest=DIGEST)
    assert (final["type"], final["reason"]) == ("update_failed", "health_check")
    assert commands.new() == [
        PULL, "docker container inspect app", "docker stop app",
        "docker rename app app-backup-1.0.0", RUN, RUNNING,
        "docker rm -f app", "docker rename app-backup-1.0.0 app", "docker start app", RUNNING]
    wait_until(lambda: world.controller.version("dev-1") == "1.0.0", 10, "state not 1.0.0")


def test_docker_changes_nothing_when_the_pull_fails_or_no_digest_is_given(
        world: World) -> None:
    agent, commands, flags = docker_agent(world)
    (flags / "pull-fails").touch()
    final = update(world, agent, "2.0.0", digest=DIGEST)
    assert (final["reason"], final["exit_code"]) == ("install_failed", 1)
    assert "manifest unknown" in final["error"]
    assert commands.new() == [PULL]
    final = update(world, agent, "2.0.1")  # a tag alone is never pulled
    assert final["reason"] == "no_artifact" and commands.new() == []


def test_docker_rollback_swaps_the_backup_back_and_keeps_three(world: World) -> None:
    agent, commands, _ = docker_agent(world)
    for version in ("2.0.0", "3.0.0", "4.0.0"):
        assert update(world, agent, version, digest=DIGEST)["type"] == "update_succeeded"
    commands.new()
    final = update(world, agent, "3.0.0", action="rollback")
    assert final["type"] == "rollback_succeeded"
    assert commands.new() == ["docker stop app", "docker rename app app-backup-4.0.0",
                              "docker rename app-backup-3.0.0 app", "docker start app",
                              RUNNING]
    assert update(world, agent, "5.0.0", digest=DIGEST)["type"] == "update_succeeded"
    assert commands.new()[-1] == "docker rm app-backup-1.0.0"  # backups: 2, 4, 3 kept


def systemd_agent(world: World) -> tuple[AgentProcess, Commands, Path, Path]:
    env, log, flags = stand_ins(world)
    binary = world.root / "usr-local-bin" / "myapp"
    binary.parent.mkdir()
    script(binary, 'echo "myapp 1.0.0"\n')
    agent = world.agent("dev-1", {"myapp": {
        "version": "1.0.0", "handler": "systemd",
        "systemd": {"unit": "myapp.service", "binary": str(binary)}}}, env=env)
    return agent, Commands(log), flags, binary


def new_binary(world: World, version: str, prints: str | None = None) -> tuple[str, str]:
    text = (f'#!/bin/sh\necho "binary $*" >> "$STANDIN_LOG"\n'
            f'echo "myapp {prints or version}"\n').encode()
    return world.artifacts.add(f"myapp-{version}", text)


def test_systemd_tests_the_binary_stops_backs_up_installs_starts_and_checks(
        world: World) -> None:
    agent, commands, _, binary = systemd_agent(world)
    old = binary.read_bytes()
    url, sha = new_binary(world, "2.0.0")
    final = update(world, agent, "2.0.0", component="myapp", url=url, sha=sha)
    assert final["type"] == "update_succeeded"
    assert commands.new() == ["binary --version", "systemctl stop myapp.service",
                              "systemctl start myapp.service", "systemctl is-active myapp.service"]
    assert sha256(binary.read_bytes()) == sha
    backup = world.root / "dev-1" / "state" / "components" / "myapp" / "backups" / "1.0.0"
    assert backup.read_bytes() == old
    assert world.controller.states["dev-1"]["deployment_type"] == "systemd"


def test_systemd_restores_the_backup_when_the_unit_is_not_active(world: World) -> None:
    agent, commands, flags, binary = systemd_agent(world)
    old = binary.read_bytes()
    (flags / "inactive-once").touch()
    url, sha = new_binary(world, "2.0.0")
    final = update(world, agent, "2.0.0", component="myapp", url=url, sha=sha)
    assert (final["type"], final["reason"], final["exit_code"]) == (
        "update_failed", "health_check", 3)
    assert commands.new() == [
        "binary --version", "systemctl stop myapp.service", "systemctl start myapp.service",
        "systemctl is-active myapp.service",
        "systemctl stop myapp.service", "systemctl start myapp.service",
        "systemctl is-active myapp.service"]
    assert binary.read_bytes() == old


def test_systemd_never_stops_the_unit_for_a_binary_that_fails_its_version_test(
        world: World) -> None:
    agent, commands, _, binary = systemd_agent(world)
    old = binary.read_bytes()
    url, sha = new_binary(world, "2.0.0", prints="1.9.9")
    final = update(world, agent, "2.0.0", component="myapp", url=url, sha=sha)
    assert final["reason"] == "install_failed" and "not version 2.0.0" in final["error"]
    assert commands.new() == ["binary --version"]
    assert binary.read_bytes() == old


def test_systemd_rollback_puts_a_kept_backup_back(world: World) -> None:
    agent, commands, _, binary = systemd_agent(world)
    old = binary.read_bytes()
    url, sha = new_binary(world, "2.0.0")
    assert update(world, agent, "2.0.0", component="myapp", url=url,
                  sha=sha)["type"] == "update_succeeded"
    commands.new()
    final = update(world, agent, "1.0.0", component="myapp", action="rollback")
    assert final["type"] == "rollback_succeeded"
    assert commands.new() == ["systemctl stop myapp.service", "systemctl start myapp.service",
                              "systemctl is-active myapp.service"]
    assert binary.read_bytes() == old
