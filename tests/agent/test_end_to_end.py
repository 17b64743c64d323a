"""Five real agent processes and a real `fleetwave run`, over a real Mosquitto, with
artifacts from a local HTTP server: the controller signs, the agents verify, install with
the `files` handler into real directories, health-check and report."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleetwave.mqtt.broker import free_port
from tests.agent.world import (
    OBSERVER,
    AgentProcess,
    World,
    files_component,
    install_version,
    script,
    tar_of,
)
from tests.support.processes import Controller, wait_until

pytestmark = pytest.mark.slow

DEVICES = ("dev-1", "dev-2", "dev-3", "dev-4", "dev-5")


def rollout(version: str, url: str, sha: str, *, max_failure: int = 50,
            min_sample: int = 5, ack_timeout: str = "20s") -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: app}}
spec:
  component: app
  version: "{version}"
  artifact: {{url: "{url}", sha256: "{sha}"}}
  selector: {{matchLabels: {{site: lab}}}}
  strategy:
    steps: [{{percent: 5}}, {{percent: 25}}, {{percent: 50}}, {{percent: 100}}]
  health: {{ackTimeout: {ack_timeout}, updateTimeout: 40s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: {max_failure}, minSample: {min_sample}, retries: 0,
                  action: pause}}
"""


@pytest.fixture
def fleet(world: World) -> Iterator[tuple[Controller, dict[str, AgentProcess]]]:
    key_file = world.root / "signing-key.pem"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, world.key.to_pem())
    os.close(fd)
    source = world.root / "rollouts"
    source.mkdir()
    workdir = world.root / "controller"
    workdir.mkdir()
    controller = Controller(workdir=workdir, broker=world.broker,  # type: ignore[arg-type]
                            port=free_port(), source=source,
                            store=f"sqlite:///{world.root / 'fleetwave.db'}",
                            key_dir=world.root)  # signs with key_file, which agents trust
    controller.start()
    agents: dict[str, AgentProcess] = {}
    try:
        yield controller, agents
    finally:
        controller.stop()


def start_agents(world: World, agents: dict[str, AgentProcess],
                 health: dict[str, Path] | None = None,
                 install: dict[str, Path] | None = None) -> None:
    for device in DEVICES:
        target = world.root / device / "app"
        target.parent.mkdir(exist_ok=True)
        install_version(target, "1.0.0", {"app.txt": "one"})
        extra: dict[str, Any] = {}
        if health and device in health:
            extra["healthCheck"] = [str(health[device])]
        if install and device in install:
            extra["install"] = [str(install[device])]
        agents[device] = world.agent(device, {"app": files_component(target, **extra)},
                                     start=False)
        agents[device].start()
    for agent in agents.values():
        world.wait_online(agent)


def phase(controller: Controller) -> str | None:
    found = controller.get("/api/v1/rollouts/app", ok_only=False)
    if not isinstance(found, dict) or "name" not in found:
        return None
    value: str | None = found["status"].get("phase")
    return value


def records(controller: Controller, device: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = controller.get(f"/api/v1/devices/{device}/updates")["items"]
    return items


def app_txt(world: World, device: str) -> str:
    return (world.root / device / "app" / "current" / "app.txt").read_text()


def test_a_5_25_50_100_rollout_completes_and_the_files_on_disk_are_the_new_version(
        world: World, fleet: tuple[Controller, dict[str, AgentProcess]]) -> None:
    controller, agents = fleet
    start_agents(world, agents)
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    (controller.source / "app.yaml").write_text(rollout("2.0.0", url, sha))
    wait_until(lambda: phase(controller) == "Completed", 90,
             lambda: f"rollout not completed: {controller.get('/api/v1/rollouts/app')}\n"
                     f"{controller.tail()}")
    for device in DEVICES:
        assert app_txt(world, device) == "two"
        assert os.readlink(world.root / device / "app" / "current") == "versions/2.0.0"
        (record,) = records(controller, device)
        assert record["state"] == "succeeded" and record["toVersion"] == "2.0.0"
    versions = {d["uuid"]: d["versions"]["app"] for d in controller.devices()}
    assert versions == dict.fromkeys(DEVICES, "2.0.0")


def test_a_corrupted_artifact_is_reported_checksum_and_no_installer_runs(
        world: World, fleet: tuple[Controller, dict[str, AgentProcess]]) -> None:
    controller, agents = fleet
    ran = world.root / "installer-ran"
    hook = script(world.root / "install.sh", f'touch "{ran}"\n')
    start_agents(world, agents, install=dict.fromkeys(DEVICES, hook))
    good = tar_of({"app.txt": "two"})
    url, sha = world.artifacts.add("app-2.tar.gz", good)
    world.artifacts.files["app-2.tar.gz"] = good + b"tampered on the way"
    (controller.source / "app.yaml").write_text(rollout("2.0.0", url, sha, max_failure=0,
                                                        min_sample=1))
    wait_until(lambda: phase(controller) == "Paused", 60,
             lambda: f"rollout not paused: {controller.get('/api/v1/rollouts/app')}")
    failed = [r for d in DEVICES for r in records(controller, d)]
    assert [(r["state"], r["reason"]) for r in failed] == [("failed", "checksum")]
    assert not ran.exists()
    assert {app_txt(world, d) for d in DEVICES} == {"one"}


def test_health_failures_and_a_kill_during_install_end_truthfully_on_working_versions(
        world: World, fleet: tuple[Controller, dict[str, AgentProcess]]) -> None:
    """dev-3's health check fails; dev-4's agent is killed with SIGKILL mid-install and
    started again; the other three succeed, and the failure budget (50 %) holds."""
    controller, agents = fleet
    unhealthy = script(world.root / "unhealthy.sh", "exit 3\n")
    fifo, started = world.root / "fifo", world.root / "install-started"
    os.mkfifo(fifo)
    blocking = script(world.root / "blocking.sh", f'touch "{started}"\nread x < "{fifo}"\n')
    start_agents(world, agents, health={"dev-3": unhealthy}, install={"dev-4": blocking})
    url, sha = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
    (controller.source / "app.yaml").write_text(rollout("2.0.0", url, sha))
    wait_until(started.exists, 90, lambda: f"dev-4 never installed\n{controller.tail()}")
    agents["dev-4"].kill()
    agents["dev-4"].start()
    wait_until(lambda: phase(controller) == "Completed", 90,
             lambda: f"rollout not completed: {controller.get('/api/v1/rollouts/app')}")
    outcome = {d: (records(controller, d)[0]["state"], records(controller, d)[0]["reason"])
               for d in DEVICES}
    assert outcome["dev-3"] == ("failed", "health_check")
    assert outcome["dev-4"] == ("failed", "interrupted")
    assert {outcome[d][0] for d in ("dev-1", "dev-2", "dev-5")} == {"succeeded"}
    assert {d: app_txt(world, d) for d in DEVICES} == {
        "dev-1": "two", "dev-2": "two", "dev-3": "one", "dev-4": "one", "dev-5": "two"}
    versions = {d["uuid"]: d["versions"]["app"] for d in controller.devices()}
    assert versions == {"dev-1": "2.0.0", "dev-2": "2.0.0", "dev-3": "1.0.0",
                        "dev-4": "1.0.0", "dev-5": "2.0.0"}


class CommandRecorder:
    """Every signed command the controller publishes, as the bytes on the wire."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="command-recorder")
        client.username_pw_set(*OBSERVER)
        client.on_connect = lambda c, *_: c.subscribe("iot/device/+/agent/update", qos=1)
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.payload:
            with self.lock:
                self.seen.setdefault(msg.topic.split("/")[2], []).append(bytes(msg.payload))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_replayed_old_command_from_the_controller_is_refused(
        world: World, fleet: tuple[Controller, dict[str, AgentProcess]]) -> None:
    controller, agents = fleet
    recorder = CommandRecorder(world.broker.port)
    try:
        start_agents(world, agents)
        url2, sha2 = world.artifacts.add("app-2.tar.gz", tar_of({"app.txt": "two"}))
        # commands expire ackTimeout after they are signed: long enough that the replay
        # below is refused for being old, not merely for being expired
        (controller.source / "app.yaml").write_text(rollout("2.0.0", url2, sha2,
                                                            ack_timeout="10m"))
        wait_until(lambda: phase(controller) == "Completed", 90, "2.0.0 not completed")
        old = recorder.seen["dev-1"][0]
        url3, sha3 = world.artifacts.add("app-3.tar.gz", tar_of({"app.txt": "three"}))
        (controller.source / "app.yaml").write_text(rollout("3.0.0", url3, sha3,
                                                            ack_timeout="10m"))
        wait_until(lambda: phase(controller) == "Completed" and all(
            r["toVersion"] == "3.0.0" and r["state"] == "succeeded"
            for r in records(controller, "dev-1")[:1]), 90, "3.0.0 not completed")
    finally:
        recorder.close()
    assert json.loads(old)["version"] == "2.0.0" and "signature" in json.loads(old)
    world.controller.send("dev-1", old)  # the controller's own signed bytes, replayed
    cid = json.loads(old)["correlation_id"]
    refusal = wait_until(lambda: next((s for s in world.controller.of("dev-1", cid)
                                     if s.get("reason") == "rejected"), None), 20,
                       lambda: f"no refusal: {world.controller.of('dev-1', cid)}")
    assert "replayed" in refusal["error"]
    assert app_txt(world, "dev-1") == "three"
