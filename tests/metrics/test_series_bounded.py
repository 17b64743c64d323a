"""The number of series on `/metrics` does not grow with the fleet.

Two identical worlds (own broker, store, source and controller) differ only in fleet
size: 1,000 and 10,000 simulated devices, each rolled to 100 % of one Rollout. Their
pages must hold the same series, and no label value may name a device. Device ids
belong in logs and the API, never in labels (DESIGN.md section 6).

maxInFlight is far above the MQTT link's publish window (1,000 unacknowledged commands),
so one pass sends 10,000 commands while statuses flood in: this once deadlocked the
controller (the engine awaited the window while holding its lock, the ingest consumer
waited for that lock, and the paho thread, whose PUBACKs open the window, waited for the
consumer). The engine now publishes outside its lock; this test keeps it that way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fleetwave.mqtt.broker import free_port
from tests.metrics.scrape import Page, device_identifiers_in, scrape
from tests.support.broker import start_broker
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

ROLLOUT = "agent-rollout"
# Long timeouts and retries: this test counts series, and 10,000 simulated devices beside
# another worker's tests acknowledge late (ack timeouts with no retry left 1,273 behind).
ROLLOUT_YAML = f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {ROLLOUT}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy:
    steps: [{{percent: 100}}]
    maxInFlight: 10000
  health: {{ackTimeout: 300s, updateTimeout: 600s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 100, retries: 3}}
"""


def rolled_out_page(workdir: Path, source: Path, devices: int, deadline: float
                    ) -> tuple[Page, list[dict[str, Any]]]:
    """Start a world with `devices` devices, roll it to 1.0.6, return the page and devices.

    Both worlds read one source folder: its path is a label value of the source metrics.
    """
    workdir.mkdir()
    broker = start_broker(workdir / "mosquitto")
    simulator = Simulator(broker=broker, workdir=workdir, devices=devices,
                          args=("--speed", "200", "--seed", str(devices)))
    controller = Controller(workdir=workdir, broker=broker, port=free_port(), source=source,
                            store=f"sqlite:///{workdir / 'fleetwave.db'}")
    try:
        simulator.start()
        controller.start()

        def versions() -> dict[str, float]:
            return scrape(controller.url).values("fleetwave_devices", "version",
                                                 component="agent")

        def done() -> bool:
            rollout = controller.get(f"/api/v1/rollouts/{ROLLOUT}", ok_only=False) or {}
            phase = (rollout.get("status") or {}).get("phase")
            return phase == "Completed" and versions() == {"1.0.6": float(devices)}

        wait_until(done, max(5.0, deadline - time.monotonic()),
                   lambda: f"{devices} devices not rolled out: {versions()}\n{controller.tail()}",
                   interval=1.0)
        return scrape(controller.url), controller.devices()
    finally:
        controller.stop()
        simulator.stop()
        broker.stop()


def test_series_count_is_the_same_for_1000_and_10000_devices(tmp_path: Path) -> None:
    # Generous: the simulator (not the controller) sets the pace, and on two shared
    # cores beside another worker's replicas 10,000 simulated devices took over 170 s.
    deadline = time.monotonic() + 420
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(ROLLOUT_YAML)
    small, small_devices = rolled_out_page(tmp_path / "small", source, 1_000, deadline)
    large, large_devices = rolled_out_page(tmp_path / "large", source, 10_000, deadline)
    assert len(small_devices) == 1_000 and len(large_devices) == 10_000

    # Both fleets run the same versions, so not even the bounded labels differ.
    assert large.series() == small.series(), (
        f"only at 10,000: {sorted(large.series() - small.series())[:20]}\n"
        f"only at 1,000: {sorted(small.series() - large.series())[:20]}")
    print(f"series: {len(small.series())} at 1,000 devices, {len(large.series())} at 10,000")
    assert device_identifiers_in(small, small_devices) == set()
    assert device_identifiers_in(large, large_devices) == set()
