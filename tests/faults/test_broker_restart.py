"""The broker goes away mid-rollout, cleanly (persistence written) and by SIGKILL (the last
autosave only): `fleetwave run` logs the outage, reconnects with back-off, resubscribes
when the broker lost its session, resynchronises from retained state, and the rollout
completes with every device holding one succeeded record, sent one correlation id.
Real Mosquitto, `fleetwave run` on SQLite and `fleetwave simulate`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.replicas.cluster import Commands, check_outcome, rollout_yaml, succeeded
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

VERSION = "2.0.0"


def events(controller: Controller, name: str) -> int:
    return sum(1 for line in controller.log.read_text(errors="replace").splitlines()
               if line.startswith("{") and json.loads(line).get("event") == name)


def test_a_broker_restart_and_a_broker_crash_lose_nothing(
        tmp_path: Path, broker: RunningBroker, recorder: Commands,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    devices = 400
    source = tmp_path / "rollouts"
    source.mkdir()
    controller = controller_factory(source)
    controller.start()
    simulator_factory(devices, "--speed", "2", "--seed", "21")
    wait_until(lambda: len(controller.devices()) == devices, 60, "devices not all known")
    (source / "fleet.yaml").write_text(rollout_yaml(VERSION, max_in_flight=60))

    wait_until(lambda: succeeded(controller.store) >= 80, 120,
               lambda: f"rollout not under way: {controller.tail()}")
    broker.restart()  # clean: Mosquitto writes its snapshot
    wait_until(lambda: succeeded(controller.store) >= 220, 180,
               lambda: f"no progress after the restart: {controller.tail()}")
    broker.process.kill()  # a crash: only the last autosave (1 s) survives
    time.sleep(2)
    broker.start()
    wait_until(lambda: controller.rollout("fleet")["status"].get("phase") == "Completed",
               240, lambda: f"not completed: {controller.tail()}")
    assert events(controller, "mqtt.disconnected") >= 2
    assert events(controller, "mqtt.connected") >= 3
    check_outcome(controller.store, recorder, devices, VERSION)
