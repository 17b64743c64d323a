"""Replicas without Kubernetes (DESIGN.md 9.3), with real processes throughout: Mosquitto with
the shipped configuration, one PostgreSQL, `fleetwave run` replicas sharing status through
`$share`, and `fleetwave simulate` devices.

- Three replicas, 2,000 devices, the leader killed with SIGKILL twice mid-rollout (each
  restarted, as a supervisor would): a new leader within 15 s of each death, the rollout
  completes, every device has one record, succeeded, and was sent one correlation id.
- Two replicas, the leader frozen with SIGSTOP until the other leads, then resumed: it
  follows, it publishes no command once its resume is over (Mosquitto's own log says who
  published what; only bytes queued before the freeze may leave as it resumes), and the
  store's records show no second attempt or correlation id
  (its plan writes would be refused by the fence: tests/replicas/test_elector.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.replicas.cluster import (
    FAILOVER_BOUND,
    Commands,
    Replicas,
    check_outcome,
    debug_broker,
    kill_leader,
    published_by,
    rollout_yaml,
    succeeded,
)
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

VERSION = "2.0.0"
RESUME_GRACE = 5.0
"""Seconds after SIGCONT in which bytes queued before the freeze may still leave."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """Overrides the plain broker: these tests read Mosquitto's debug log."""
    running = debug_broker(tmp_path / "mosquitto")
    try:
        yield running
    finally:
        running.stop()


def test_two_leader_deaths_during_a_rollout_of_2000_devices(
        tmp_path: Path, postgres_url: str, recorder: Commands,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    devices = 2000
    source = tmp_path / "rollouts"
    source.mkdir()
    replicas = Replicas(controller_factory, source, postgres_url, count=3)
    replicas.start()
    simulator_factory(devices, "--speed", "2", "--seed", "3")
    leader = replicas.wait_leader(30, "at start")
    wait_until(lambda: len(leader.devices()) == devices, 60,
               lambda: f"devices not all known: {len(leader.devices())}")
    (source / "fleet.yaml").write_text(rollout_yaml(VERSION, max_in_flight=250))

    wait_until(lambda: succeeded(postgres_url) >= 300, 120,
               lambda: f"rollout not under way: {replicas.tails()}")
    kill_leader(replicas, "the first SIGKILL")
    wait_until(lambda: succeeded(postgres_url) >= 1100, 180,
               lambda: f"no progress after the first death: {replicas.tails()}")
    kill_leader(replicas, "the second SIGKILL")
    wait_until(lambda: replicas.phase() == "Completed", 240,
               lambda: f"not completed: {replicas.phase()}; {replicas.tails()}")
    check_outcome(postgres_url, recorder, devices, VERSION)


def test_a_deposed_leader_frozen_and_resumed_writes_and_publishes_nothing(
        tmp_path: Path, postgres_url: str, broker: RunningBroker, recorder: Commands,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    devices = 600
    source = tmp_path / "rollouts"
    source.mkdir()
    replicas = Replicas(controller_factory, source, postgres_url, count=2)
    replicas.start()
    simulator_factory(devices, "--speed", "1", "--seed", "5")
    leader = replicas.wait_leader(30, "at start")
    wait_until(lambda: len(leader.devices()) == devices, 60, "devices not all known")
    (source / "fleet.yaml").write_text(rollout_yaml(VERSION, max_in_flight=60))
    wait_until(lambda: succeeded(postgres_url) >= 60, 120,
               lambda: f"rollout not under way: {replicas.tails()}")

    assert leader.proc is not None
    frozen_at = time.time()
    leader.proc.send_signal(19)  # SIGSTOP
    try:
        other = replicas.wait_leader(FAILOVER_BOUND + 5, "while the leader is frozen")
        assert other is not leader
        progress = succeeded(postgres_url)
        wait_until(lambda: succeeded(postgres_url) > progress + 30, 60,
                   "the new leader makes no progress")
    finally:
        leader.proc.send_signal(18)  # SIGCONT
        resumed_at = time.time()
    wait_until(lambda: replicas.role(leader) == "follower", 30,
               lambda: f"the resumed leader does not follow: {leader.tail()}")
    wait_until(lambda: replicas.phase() == "Completed", 240,
               lambda: f"not completed: {replicas.phase()}; {replicas.tails()}")
    assert replicas.leaders() == [other]
    # A command handed to the MQTT client just before the SIGSTOP leaves when the process
    # resumes (or is resent on its reconnect): no check in the process can stop bytes it
    # already queued, and the device's release number makes that copy a replay of the same
    # attempt. What must not happen is a command decided after the freeze: nothing from the
    # deposed leader once its resume is over.
    assert published_by(broker, replicas.client_id(leader),
                        since=resumed_at + RESUME_GRACE) == []
    assert published_by(broker, replicas.client_id(other), since=frozen_at + 1) != []
    check_outcome(postgres_url, recorder, devices, VERSION)
