"""Chaos, seeded: during one rollout of 1,500 simulated devices over three `fleetwave run`
replicas, two clean broker restarts (with persistence) and three SIGKILLs of a replica
(leader or follower, chosen by the seed), each at a point of progress chosen by the seed.
The rollout ends Completed, with no duplicate attempt, no lost record, and every device on
the new version holding exactly one succeeded record. Real Mosquitto, PostgreSQL, replicas
and simulator."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.replicas.cluster import (
    FAILOVER_BOUND,
    Commands,
    Replicas,
    check_outcome,
    rollout_yaml,
    succeeded,
)
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

SEED = 18
VERSION = "3.1.0"


def test_broker_restarts_and_replica_kills_during_one_rollout(
        tmp_path: Path, postgres_url: str, broker: RunningBroker, recorder: Commands,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    rng = random.Random(SEED)
    devices = 1500
    faults = ["broker restart"] * 2 + ["replica kill"] * 3
    rng.shuffle(faults)
    points = sorted(rng.sample(range(100, devices - 200), len(faults)))
    source = tmp_path / "rollouts"
    source.mkdir()
    replicas = Replicas(controller_factory, source, postgres_url, count=3)
    replicas.start()
    simulator_factory(devices, "--speed", "2", "--seed", str(SEED))
    leader = replicas.wait_leader(30, "at start")
    wait_until(lambda: len(leader.devices()) == devices, 60, "devices not all known")
    (source / "fleet.yaml").write_text(rollout_yaml(VERSION, max_in_flight=200))

    for fault, point in zip(faults, points, strict=True):
        wait_until(lambda point=point: succeeded(postgres_url) >= point, 240,
                   lambda fault=fault, point=point: f"stuck before {fault} at {point}: "
                                                    f"{replicas.tails()}")
        if fault == "broker restart":
            broker.restart()
        else:
            victim = rng.choice(replicas.members)
            victim.kill()
            replicas.wait_leader(FAILOVER_BOUND + 5, f"after killing {victim.url}")
            victim.start()
    wait_until(lambda: replicas.phase() == "Completed", 300,
               lambda: f"not completed: {replicas.phase()}; {replicas.tails()}")
    check_outcome(postgres_url, recorder, devices, VERSION)
