"""One real agent process with the `files` handler on a real directory, commanded over a
real Mosquitto with commands signed as the controller signs them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fleetwave.protocol.admission import format_time
from tests.agent.world import World, files_component, install_version, script, tar_of
from tests.support.processes import wait_until


def current(target: Path) -> str:
    return os.readlink(target / "current")


def test_an_update_swaps_the_directory_and_reports_success_after_the_health_check(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    checked = world.root / "checked"
    health = script(world.root / "health.sh",
                    f'cat "{target}/current/app.txt" >> "{checked}"\n')
    agent = world.agent("dev-1", {"app": files_component(target, healthCheck=[str(health)])})
    assert world.controller.version("dev-1") == "1.0.0"
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_succeeded" and final["version"] == "2.0.0"
    assert world.controller.types("dev-1", body["correlation_id"])[:2] == [
        "update_command_received", "update_started"]
    assert current(target) == "versions/2.0.0"
    assert (target / "current" / "app.txt").read_text() == "two"
    assert checked.read_text() == "two"  # the health check saw the new files
    assert list((world.root / "dev-1" / "state" / "downloads").iterdir()) == []
    wait_until(lambda: world.controller.version("dev-1") == "2.0.0", 10, "state not updated")


def test_a_corrupted_artifact_is_reported_checksum_and_the_installer_never_runs(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    ran = world.root / "installer-ran"
    hook = script(world.root / "install.sh", f'touch "{ran}"\n')
    agent = world.agent("dev-1", {"app": files_component(target, install=[str(hook)])})
    good = tar_of({"app.txt": "two"})
    url, sha = world.artifacts.add("app-2.tar.gz", good)
    world.artifacts.files["app-2.tar.gz"] = good[:-10] + b"corrupted!"
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_failed" and final["reason"] == "checksum"
    assert not ran.exists()
    assert current(target) == "versions/1.0.0"
    assert not (target / "versions" / "2.0.0").exists()
    assert world.controller.version("dev-1") == "1.0.0"


def test_a_failing_health_check_restores_the_previous_files(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    health = script(world.root / "health.sh",
                    f'grep -q one "{target}/current/app.txt" || exit 7\n')
    agent = world.agent("dev-1", {"app": files_component(target, healthCheck=[str(health)])})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    final = world.final(agent, body["correlation_id"])
    assert final["type"] == "update_failed"
    assert final["reason"] == "health_check" and final["exit_code"] == 7
    assert "previous version 1.0.0 restored" in final["error"]
    assert current(target) == "versions/1.0.0"
    assert (target / "current" / "app.txt").read_text() == "one"
    wait_until(lambda: world.controller.version("dev-1") == "1.0.0", 10, "state not old")


def test_the_last_three_versions_are_kept_and_a_rollback_command_goes_back(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "1"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    for n in (2, 3, 4):
        url, sha = world.artifacts.add(f"app-{n}.tar.gz", tar_of({"app.txt": str(n)}))
        body = world.controller.command("dev-1", f"{n}.0.0", url=url, sha=sha)
        world.controller.send("dev-1", body)
        assert world.final(agent, body["correlation_id"])["type"] == "update_succeeded"
    assert sorted(p.name for p in (target / "versions").iterdir()) == [
        "2.0.0", "3.0.0", "4.0.0"]
    back = world.controller.command("dev-1", "3.0.0", action="rollback")
    world.controller.send("dev-1", back)
    final = world.final(agent, back["correlation_id"])
    assert final["type"] == "rollback_succeeded" and final["version"] == "3.0.0"
    assert (target / "current" / "app.txt").read_text() == "3"
    gone = world.controller.command("dev-1", "1.0.0", action="rollback")
    world.controller.send("dev-1", gone)
    final = world.final(agent, gone["correlation_id"])
    assert final["type"] == "rollback_failed" and final["reason"] == "no_backup"
    assert (target / "current" / "app.txt").read_text() == "3"


def test_a_scheduled_update_waits_and_a_cancel_stops_it(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha,
                                    scheduled_time=format_time(time.time() + 3600))
    world.controller.send("dev-1", body)
    cid = body["correlation_id"]
    wait_until(lambda: "update_scheduled" in world.controller.types("dev-1", cid), 10,
             "not scheduled")
    world.controller.send("dev-1", body)  # a re-publish: acknowledged again, acted on once
    wait_until(lambda: world.controller.types("dev-1", cid).count("update_scheduled") == 2, 10,
             "re-publish not answered")
    assert world.controller.types("dev-1", cid).count("update_command_received") == 2
    cancel = world.controller.command("dev-1", "2.0.0", action="cancel",
                                      correlation_id=cid, release=body["release"])
    world.controller.send("dev-1", cancel)
    assert world.final(agent, cid)["type"] == "update_cancelled"
    assert current(target) == "versions/1.0.0"
    assert world.artifacts.requests == []  # never downloaded


def test_a_finished_command_sent_again_gets_its_final_status_repeated(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    cid = body["correlation_id"]
    assert world.final(agent, cid)["type"] == "update_succeeded"
    world.controller.send("dev-1", body)
    wait_until(lambda: world.controller.types("dev-1", cid).count("update_succeeded") >= 2, 10,
             "final status not repeated")
    assert world.controller.types("dev-1", cid).count("update_started") == 1
    assert len([r for r in world.artifacts.requests if r[0] == "app-2.tar.gz"]) == 1


def test_a_cancel_during_the_install_puts_the_previous_files_back(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    fifo, started = world.root / "fifo", world.root / "started"
    os.mkfifo(fifo)
    hook = script(world.root / "install.sh", f'touch "{started}"\nread x < "{fifo}"\n')
    agent = world.agent("dev-1", {"app": files_component(target, install=[str(hook)])})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha)
    world.controller.send("dev-1", body)
    wait_until(started.exists, 20, lambda: f"install not started\n{agent.log_tail()}")
    cid = body["correlation_id"]
    world.controller.send("dev-1", world.controller.command(
        "dev-1", "2.0.0", action="cancel", correlation_id=cid, release=body["release"]))
    wait_until(lambda: "cancel requested" in agent.log_tail(), 10, "cancel not seen")
    fifo.write_text("go\n")  # the install finishes; the agent does not stay on it
    final = world.final(agent, cid)
    assert final["type"] == "update_cancelled"
    assert "previous version 1.0.0 restored" in final["error"]
    assert (target / "current" / "app.txt").read_text() == "one"
    wait_until(lambda: world.controller.version("dev-1") == "1.0.0", 10, "state not 1.0.0")


def test_a_scheduled_update_starts_no_earlier_than_its_scheduled_time(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    at = int(time.time()) + 3
    body = world.controller.command("dev-1", "2.0.0", url=url, sha=sha,
                                    scheduled_time=format_time(at))
    world.controller.send("dev-1", body)
    assert world.final(agent, body["correlation_id"])["type"] == "update_succeeded"
    by_type = {s["type"]: s for s in world.controller.of("dev-1", body["correlation_id"])}
    assert by_type["update_scheduled"]["scheduled_time"] == format_time(at)
    assert by_type["update_started"]["timestamp"] >= at * 1000
    assert (target / "current" / "app.txt").read_text() == "two"
