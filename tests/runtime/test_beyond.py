"""Issue 10 end to end: pacing, the penalty box, devices silent after success, supersede.

Each test runs the real processes (Mosquitto, `fleetwave run` on SQLite with a folder
source, `fleetwave simulate`) and reads the outcome back through the HTTP API and the
store, as an operator would. Devices are picked from the live fleet after the
simulator announced them, so the tests need not know how the seed names them.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetwave.protocol.topics import Topics
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.records import stored_attempts

pytestmark = pytest.mark.slow


def rollout_yaml(name: str, *, version: str = "1.0.6", selector: str = "{}",
                 strategy: str, health: str = "{ackTimeout: 30s, updateTimeout: 60s, "
                 "stableFor: 1s}", failure: str) -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  component: agent
  version: "{version}"
  selector: {selector}
  strategy: {strategy}
  health: {health}
  failurePolicy: {failure}
"""


def status_of(controller: Controller, name: str) -> dict[str, Any]:
    rollout = controller.get(f"/api/v1/rollouts/{name}", ok_only=False)
    status = rollout.get("status") if isinstance(rollout, dict) else None
    return status if isinstance(status, dict) else {}


def devices_of(controller: Controller, name: str) -> list[dict[str, Any]]:
    """`GET /api/v1/rollouts/{name}/devices`: each device's latest attempt ([] if none yet)."""
    page = controller.get(f"/api/v1/rollouts/{name}/devices", ok_only=False)
    items = page.get("items") if isinstance(page, dict) else None
    return items if isinstance(items, list) else []


def events_of(controller: Controller, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = controller.get(
        f"/api/v1/rollouts/{name}/events?limit=1000")["items"]
    return items


def start_fleet(tmp_path: Path, controller_factory: Callable[..., Controller],
                simulator_factory: Callable[..., Simulator], devices: int,
                *sim_args: str) -> tuple[Controller, Path, list[str]]:
    """Simulator and controller on an empty folder; returns the announced device uuids."""
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(devices, "--speed", "40", *sim_args)
    controller = controller_factory(source)
    controller.start()
    uuids = wait_until(lambda: len(ds := controller.devices()) == devices
                       and sorted(d["uuid"] for d in ds), 30,
                       lambda: f"{len(controller.devices())}/{devices} devices announced")
    return controller, source, uuids


def test_max_per_minute_is_respected_within_five_percent_over_a_minute(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """120 a minute over 600 devices: the minute after the first command holds 120 ± 5 %
    commands, and so does every later full minute measured while sending went on."""
    controller, source, _ = start_fleet(tmp_path, controller_factory, simulator_factory,
                                        600, "--seed", "11")
    (source / "paced.yaml").write_text(rollout_yaml(
        "paced", strategy="{steps: [{percent: 100}], maxInFlight: 1000, maxPerMinute: 120}",
        failure="{maxFailurePercent: 50, minSample: 10, retries: 0}"))
    first = wait_until(lambda: stored_attempts(controller.store, "paced"), 30,
                       lambda: f"no command sent\n{controller.tail()}")[0].created_at
    time.sleep(max(0.0, first + 62 - time.time()))
    created = sorted(r.created_at for r in stored_attempts(controller.store, "paced")
                     if r.action == "update")
    minute = [t for t in created if first <= t < first + 60]
    assert 120 * 0.95 <= len(minute) <= 120 * 1.05, (len(minute), created[:10])
    # Any full minute inside the measured span, not just the first.
    for offset in range(0, len(created)):
        start = created[offset]
        if start + 60 > created[-1]:
            break
        assert sum(1 for t in created if start <= t < start + 60) <= 120 * 1.05
    sent = [r.sent_at for r in stored_attempts(controller.store, "paced") if r.sent_at is not None]
    published = sum(1 for t in sent if first <= t < first + 60)
    assert published <= 120 * 1.05, published


def test_a_device_that_always_fails_is_parked_after_retries_plus_one_and_not_retried(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller, source, uuids = start_fleet(tmp_path, controller_factory, simulator_factory,
                                            20, "--seed", "12", "--fail-rate", "1.0")
    boxed = uuids[:3]
    (source / "boxed.yaml").write_text(rollout_yaml(
        "boxed", selector=json.dumps({"devices": boxed}),
        strategy="{steps: [{percent: 100}]}",
        failure="{maxFailurePercent: 100, minSample: 100, retries: 1, retryBackoff: 1s, "
                "rollbackFailedDevices: false}"))
    status = wait_until(lambda: (s := status_of(controller, "boxed")).get("counts", {})
                        .get("parked") == 3 and s, 60,
                        lambda: f"not parked: {status_of(controller, 'boxed')}\n"
                                f"{controller.tail()}")
    assert status["failureRate"] == 100.0
    attempts = collections.Counter(r.device for r in stored_attempts(controller.store, "boxed"))
    assert attempts == dict.fromkeys(boxed, 2)  # retries + 1
    time.sleep(6)  # several retry back-offs: nothing new for parked devices
    assert collections.Counter(
        r.device for r in stored_attempts(controller.store, "boxed")) == attempts
    per_device = {d["uuid"]: d for d in devices_of(controller, "boxed")}
    assert {u: (per_device[u]["state"], per_device[u]["attempt"]) for u in boxed} == \
        dict.fromkeys(boxed, ("failed", 2))
    parked = {e["device"] for e in events_of(controller, "boxed")
              if e["reason"] == "DeviceParked"}
    assert parked == set(boxed)
    # `promote --device` releases one device: it alone gets retries + 1 fresh attempts.
    controller.post("/api/v1/rollouts/boxed/promote", {"device": boxed[0]})
    wait_until(lambda: collections.Counter(
        r.device for r in stored_attempts(controller.store, "boxed"))[boxed[0]] == 4, 30,
        lambda: f"released device not retried: {status_of(controller, 'boxed')}")
    after = collections.Counter(r.device for r in stored_attempts(controller.store, "boxed"))
    assert (after[boxed[1]], after[boxed[2]]) == (2, 2)


def _go_silent(broker: RunningBroker, device: str) -> None:
    """What a bricked device's broker publishes for it: its last will, online=false."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"silence-{device}")
    client.username_pw_set(*broker.simulator)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(Topics().online(device),
                              json.dumps({"online": False,
                                          "timestamp": int(time.time() * 1000)}),
                              qos=1, retain=True)
        info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_device_silent_after_success_counts_as_unhealthy(
        tmp_path: Path, broker: RunningBroker, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """The simulator has no "silent after success" failure, so the test publishes the
    device's last will itself the moment its success is recorded. offlineAfterUpdate
    is 15 s (not 2 s) so that a slow CI machine still publishes within it."""
    controller, source, uuids = start_fleet(tmp_path, controller_factory, simulator_factory,
                                            10, "--seed", "13")
    chosen = uuids[:3]
    (source / "silent.yaml").write_text(rollout_yaml(
        "silent", selector=json.dumps({"devices": chosen}),
        strategy="{steps: [{percent: 100}]}",
        health="{ackTimeout: 30s, updateTimeout: 60s, stableFor: 20s}",
        failure="{maxFailurePercent: 50, minSample: 3, retries: 0, offlineAfterUpdate: 15s, "
                "rollbackFailedDevices: false}"))

    def succeeded() -> bool:
        return any(r["uuid"] == chosen[0] and r["state"] == "succeeded"
                   for r in devices_of(controller, "silent"))

    wait_until(succeeded, 30, lambda: f"never succeeded\n{controller.tail()}", interval=0.05)
    _go_silent(broker, chosen[0])
    status = wait_until(lambda: (s := status_of(controller, "silent")).get("counts", {})
                        .get("unhealthy") == 1 and s.get("phase") == "Completed" and s, 60,
                        lambda: f"not unhealthy: {status_of(controller, 'silent')}\n"
                                f"{controller.tail()}")
    assert status["counts"]["succeeded"] == 2
    assert status["failureRate"] == pytest.approx(100 / 3, abs=0.01)
    rows = {r["uuid"]: r for r in devices_of(controller, "silent")}
    assert (rows[chosen[0]]["health"], rows[chosen[0]]["reason"]) == \
        ("unhealthy", "OfflineAfterUpdate")
    assert {rows[u]["health"] for u in chosen[1:]} == {"healthy"}


def test_a_new_version_mid_rollout_restarts_at_the_first_step(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller, source, uuids = start_fleet(tmp_path, controller_factory, simulator_factory,
                                            200, "--seed", "14")
    strategy = ("{steps: [{percent: 10, pause: 1h}, {percent: 50, pause: 1h}, "
                "{percent: 100}], maxInFlight: 300}")
    failure = "{maxFailurePercent: 50, minSample: 10, retries: 0}"
    path = source / "agent.yaml"
    path.write_text(rollout_yaml("agent", strategy=strategy, failure=failure))
    wait_until(lambda: status_of(controller, "agent").get("message", "").startswith(
        "step 1/3 pause"), 60, lambda: f"canary never paused: {status_of(controller, 'agent')}")
    canary = {r.device for r in stored_attempts(controller.store, "agent")}
    controller.post("/api/v1/rollouts/agent/promote")
    wait_until(lambda: (s := status_of(controller, "agent")).get("currentStep") == 1
               and s.get("message", "").startswith("step 2/3 pause"), 60,
               lambda: f"step 2 never finished: {status_of(controller, 'agent')}")
    assert len({r.device for r in stored_attempts(controller.store, "agent")}) == 100

    path.write_text(rollout_yaml("agent", version="1.0.7", strategy=strategy,
                                 failure=failure))
    status = wait_until(lambda: (s := status_of(controller, "agent")).get("message", "")
                        .startswith("step 1/3 pause") and s, 60,
                        lambda: f"no restart: {status_of(controller, 'agent')}\n"
                                f"{controller.tail()}")
    assert status["currentStep"] == 0
    new = {r.device for r in stored_attempts(controller.store, "agent") if r.to_version == "1.0.7"}
    assert new == canary and len(new) == 20  # the same canary, nothing further
    reasons = [e["reason"] for e in events_of(controller, "agent")]
    assert "Superseded" in reasons and "RestartedAtFirstStep" in reasons
    restarted = next(e for e in events_of(controller, "agent")
                     if e["reason"] == "RestartedAtFirstStep")
    assert "1.0.7 restarts at step 1" in restarted["message"]
    versions = collections.Counter(d["versions"]["agent"] for d in controller.devices())
    assert versions["1.0.7"] == 20 and versions["1.0.6"] == 80, versions
    assert set(uuids) >= new
