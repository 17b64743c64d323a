"""A command with `confirm_after_restart`: the real agent installs, then reports nothing
final until it runs under another boot id. A real reboot cannot run in a test, so the
agent's `bootIdFile` (by default /proc/sys/kernel/random/boot_id, which Linux renews on
every boot) points at a file the test rewrites: the agent process is stopped, the file
gets a new id, and the agent starts again on the same stateDir, as after a reboot."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.agent.world import World, files_component, install_version, tar_of
from tests.support.processes import wait_until


def phase(world: World) -> str | None:
    path = world.root / "dev-1" / "state" / "journal.json"
    if not path.exists():
        return None  # nothing journalled yet
    journal = json.loads(path.read_text())
    attempts = journal["attempts"]
    return attempts[0]["phase"] if attempts else None


def test_success_only_after_the_new_version_runs_under_a_new_boot(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    boot = world.root / "boot_id"
    boot.write_text("boot-1\n")
    agent = world.agent("dev-1", {"app": files_component(target)}, bootIdFile=str(boot))
    assert world.controller.states["dev-1"]["boot_id"] == "boot-1"
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha,
                                    confirm_after_restart=True)
    cid = body["correlation_id"]
    world.controller.send("dev-1", body)
    wait_until(lambda: phase(world) == "awaiting_restart", 20,
               lambda: f"never waited for the restart\n{agent.log_tail()}")
    assert os.readlink(target / "current") == "versions/2.0.0"  # installed
    [ack] = [s for s in world.controller.of("dev-1", cid)
             if s["type"] == "update_command_received"]
    assert ack["boot_id"] == "boot-1"  # what the controller compares a restart with

    agent.stop()  # the agent restarts, the device does not: still no success
    agent.start()
    world.wait_online(agent)
    time.sleep(3)  # the worker polls the boot id every 2 s
    assert world.controller.final("dev-1", cid) is None, agent.log_tail()
    assert phase(world) == "awaiting_restart"

    agent.kill()  # the device reboots: a new boot id when it comes back
    boot.write_text("boot-2\n")
    agent.start()
    final = world.final(agent, cid)
    assert final["type"] == "update_succeeded" and final["version"] == "2.0.0"
    wait_until(lambda: world.controller.states["dev-1"]["versions"]["app"] == "2.0.0"
               and world.controller.states["dev-1"]["boot_id"] == "boot-2", 10,
               lambda: f"state: {world.controller.states['dev-1']}")
    assert (target / "current" / "app.txt").read_text() == "two"
    assert phase(world) is None


def test_without_a_boot_id_it_puts_the_old_version_back(world: World) -> None:
    """A device that cannot name its boot cannot show a restart: never assumed."""
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)},
                        bootIdFile=str(world.root / "no-such-file"))
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha,
                                    confirm_after_restart=True)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_failed" and final["reason"] == "not_confirmed"
    assert "names no boot" in final["error"]
    assert os.readlink(target / "current") == "versions/1.0.0"
    assert Path(target / "current" / "app.txt").read_text() == "one"
