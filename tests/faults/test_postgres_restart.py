"""PostgreSQL restarts during a rollout: `fleetwave run` keeps running, `/readyz` says the
store is unreachable meanwhile, writes are retried, and the rollout completes with every
device holding one succeeded record. A private PostgreSQL cluster, so the restart disturbs
no other test; Mosquitto and the simulator are real too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.replicas.cluster import Commands, answer, check_outcome, rollout_yaml, succeeded
from tests.support.postgres import PrivateCluster, private_cluster
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

VERSION = "2.0.0"


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


def test_a_postgres_restart_mid_rollout_pauses_and_continues(
        tmp_path: Path, cluster: PrivateCluster, recorder: Commands,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    devices = 400
    source = tmp_path / "rollouts"
    source.mkdir()
    controller = controller_factory(source, store=cluster.url,
                                    extra_args=["--client-id", "fleetwave-pg"])
    controller.start()
    simulator_factory(devices, "--speed", "2", "--seed", "11")
    wait_until(lambda: len(controller.devices()) == devices, 60, "devices not all known")
    (source / "fleet.yaml").write_text(rollout_yaml(VERSION, max_in_flight=60))
    wait_until(lambda: succeeded(cluster.url) >= 60, 120,
               lambda: f"rollout not under way: {controller.tail()}")

    cluster.stop()
    try:
        body = wait_until(lambda: _not_ready_store(controller), 30,
                          lambda: f"/readyz never said the store is down: {controller.tail()}")
        assert "store" in body["checks"]
        time.sleep(3)  # passes and ingest fail meanwhile: they must wait, not crash
        assert controller.proc is not None and controller.proc.poll() is None
    finally:
        cluster.start()
    wait_until(lambda: answer(controller, "/readyz").get("ready") is True,
               60, lambda: f"not ready after PostgreSQL came back: {controller.tail()}")
    wait_until(lambda: (controller.rollout("fleet")["status"].get("phase") == "Completed"),
               240, lambda: f"not completed: {controller.tail()}")
    assert controller.proc is not None and controller.proc.poll() is None
    check_outcome(cluster.url, recorder, devices, VERSION)


def _not_ready_store(controller: Controller) -> dict[str, Any] | None:
    body = answer(controller, "/readyz")
    if body.get("ready") is False and body.get("checks", {}).get("store", "ok") != "ok":
        return body
    return None
