"""`strategy.requires` through `fleetwave run` and `fleetwave simulate` (real Mosquitto,
real processes): devices on 1.0.5, below `below: 2.0.0`, are taken to the mandatory
intermediate 2.0.0 first and then to 3.0.0, both as attempts of the same rollout, visible
in each device's history (`GET /api/v1/devices/{uuid}/updates`), in the rollout's device
list (its latest attempt, the second) and in the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.updates.model import UpdateState
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.records import stored_attempts

pytestmark = pytest.mark.slow

DEVICES = 10

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: agent-3}
spec:
  component: agent
  version: "3.0.0"
  selector: {}
  strategy:
    steps: [{percent: 50}, {percent: 100}]
    maxInFlight: 10
    requires: [{below: "2.0.0", via: "2.0.0"}]
  health: {ackTimeout: 15s, updateTimeout: 20s, stableFor: 1s}
  failurePolicy: {retries: 0}
"""


def test_a_device_below_goes_through_via_then_to_the_target(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(DEVICES, "--speed", "40", "--seed", "5",
                      "--component-version", "agent=1.0.5")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 30, "fleet did not report in")
    (source / "agent.yaml").write_text(ROLLOUT)

    def completed() -> dict[str, Any] | None:
        rollout: Any = controller.get("/api/v1/rollouts/agent-3", ok_only=False)
        status = rollout.get("status") if isinstance(rollout, dict) and "name" in rollout \
            else None
        return status if status and status.get("phase") == "Completed" else None

    status = wait_until(completed, 60, lambda: f"not completed\n{controller.tail()}")
    assert status["done"] == DEVICES and status["counts"]["failed"] == 0
    assert {d["versions"]["agent"] for d in controller.devices()} == {"3.0.0"}

    records = [r for r in stored_attempts(controller.store, "agent-3") if r.action == "update"]
    per_device: dict[str, list[tuple[int, str, UpdateState]]] = {}
    for r in sorted(records, key=lambda r: r.attempt):
        per_device.setdefault(r.device, []).append((r.attempt, r.to_version, r.state))
    assert len(per_device) == DEVICES
    for path in per_device.values():
        assert path == [(1, "2.0.0", UpdateState.SUCCEEDED), (2, "3.0.0", UpdateState.SUCCEEDED)]
    for r in records:  # each hop started from where the device was
        assert r.from_version == {"2.0.0": "1.0.5", "3.0.0": "2.0.0"}[r.to_version]

    some = next(iter(per_device))
    history = controller.get(f"/api/v1/devices/{some}/updates")["items"]
    assert sorted((h["rollout"], h["toVersion"], h["state"]) for h in history) == [
        ("agent-3", "2.0.0", "succeeded"), ("agent-3", "3.0.0", "succeeded")]
    listed = controller.get("/api/v1/rollouts/agent-3/devices?limit=100")["items"]
    assert sorted(d["uuid"] for d in listed) == sorted(per_device)
    assert {(d["attempt"], d["fromVersion"], d["toVersion"], d["state"]) for d in listed} == {
        (2, "2.0.0", "3.0.0", "succeeded")}  # the latest attempt of each: the second hop
