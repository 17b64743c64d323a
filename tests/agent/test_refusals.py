"""Commands the agent must not act on (DESIGN.md 9.1), each reported with a reason, while
the device stays on its working version. A real agent process and a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetwave.protocol.signing import SigningKey
from tests.agent.world import World, files_component, install_version, tar_of
from tests.support.processes import wait_until


def setup(world: World) -> tuple[Any, Path]:
    target = world.root / "app"
    install_version(target, "2.0.0", {"app.txt": "two"})
    return world.agent("dev-1", {"app": files_component(target, version="2.0.0")}), target


def refusal(world: World, agent: Any, body: dict[str, Any] | bytes) -> dict[str, Any]:
    before = len(world.controller.of("dev-1"))
    world.controller.send("dev-1", body)
    found: dict[str, Any] = wait_until(
        lambda: next((s for s in world.controller.of("dev-1")[before:]
                      if s["type"] == "update_failed"), None), 15,
        lambda: f"no refusal: {world.controller.of('dev-1')}\n{agent.log_tail()}")
    return found


def test_a_replayed_old_command_is_refused(world: World) -> None:
    agent, target = setup(world)
    url, sha = world.artifacts.add("app-3.tar.gz", tar_of({"app.txt": "three"}))
    old = world.controller.command("dev-1", "2.5.0", url=url, sha=sha, release=10)
    new = world.controller.command("dev-1", "3.0.0", url=url, sha=sha, release=11)
    world.controller.send("dev-1", new)
    assert world.final(agent, new["correlation_id"])["type"] == "update_succeeded"
    refused = refusal(world, agent, old)
    assert refused["reason"] == "rejected" and "replayed" in refused["error"]
    assert refused["correlation_id"] == old["correlation_id"]
    assert (target / "current" / "app.txt").read_text() == "three"
    # and still after a restart: the ledger is in the journal
    agent.stop()
    agent.start()
    world.wait_online(agent)
    refused = refusal(world, agent, world.controller.command("dev-1", "2.6.0", url=url, sha=sha,
                                                             release=9))
    assert "replayed" in refused["error"]
    assert (target / "current" / "app.txt").read_text() == "three"


def test_forged_expired_misaddressed_downgrading_and_unknown_commands_are_refused(
        world: World) -> None:
    agent, target = setup(world)
    c = world.controller
    forged = SigningKey.generate().sign({k: v for k, v in c.command("dev-1", "3.0.0").items()
                                         if k != "signature"})
    tampered = c.command("dev-1", "3.0.0")
    tampered["version"] = "9.9.9"
    unsigned = {k: v for k, v in c.command("dev-1", "3.0.0").items() if k != "signature"}
    cases = [
        (forged, "rejected", "untrusted key"),
        (tampered, "rejected", "does not verify"),
        (unsigned, "rejected", "unsigned"),
        (c.command("dev-1", "3.0.0", expires_in=-60), "rejected", "expired"),
        (c.command("dev-2", "3.0.0"), "rejected", "not this one"),
        (c.command("dev-1", "1.0.0"), "downgrade", "lower than the running 2.0.0"),
        (c.command("dev-1", "3.0.0", action="explode"), "rejected", "action must be one of"),
        (b"\xff not json", "rejected", "not JSON"),
    ]
    for body, reason, cause in cases:
        refused = refusal(world, agent, body)
        assert (refused["reason"], cause in refused["error"]) == (reason, True), refused
    unknown = c.command("dev-1", "3.0.0", component="nodered")
    c.send("dev-1", unknown)
    final = world.final(agent, unknown["correlation_id"])
    assert final["reason"] == "unknown_component"
    assert (target / "current" / "app.txt").read_text() == "two"
    assert c.version("dev-1") == "2.0.0"
    assert "update_started" not in c.types("dev-1")


def test_a_cleared_retained_command_is_not_a_refusal(world: World) -> None:
    agent, _ = setup(world)
    world.controller.send("dev-1", b"")
    marker = world.controller.command("dev-1", "2.0.0")
    world.controller.send("dev-1", marker)  # already there: succeeded at once
    final = world.final(agent, marker["correlation_id"])
    assert final.get("reason") == "already_at_version"
    assert [s for s in world.controller.of("dev-1") if s["type"] == "update_failed"] == []
    assert final["version"] == "2.0.0"
