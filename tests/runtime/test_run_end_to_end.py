"""`fleetwave run` against a real Mosquitto and `fleetwave simulate`, end to end.

Everything here is a real process: the broker with the shipped configuration,
the controller on SQLite with a folder source, and 1,000 simulated devices. The
tests read what happened back through the HTTP API and the store.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.store import open_store
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

DEVICES = 1000


def rollout_yaml(*, version: str = "1.0.6", failure: str = "", steps: str = "") -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: agent-rollout}}
spec:
  component: agent
  version: "{version}"
  selector: {{}}
  strategy:
    steps: {steps or "[{percent: 5}, {percent: 25}, {percent: 50}, {percent: 100}]"}
    maxInFlight: 300
  health: {{ackTimeout: 15s, updateTimeout: 30s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 10, minSample: 10, retries: 0, {failure}}}
"""


def write_rollout(folder: Path, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "agent.yaml").write_text(text)


def phase_of(controller: Controller) -> Callable[[], Any]:
    def check() -> Any:
        rollout = controller.get("/api/v1/rollouts/agent-rollout", ok_only=False)
        if not isinstance(rollout, dict) or "name" not in rollout:
            return {}  # not loaded yet (404) or server not up
        status: dict[str, Any] = rollout["status"]
        return status
    return check


def agent_versions(controller: Controller) -> collections.Counter[str | None]:
    return collections.Counter(d["versions"].get("agent") for d in controller.devices())


def records_per_device(store_url: str) -> dict[str, list[dict[str, Any]]]:
    async def load() -> dict[str, list[dict[str, Any]]]:
        store = open_store(store_url)
        try:
            records = await store.updates.of_rollout("agent-rollout")
        finally:
            await store.close()
        out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in records:
            out[r.device].append({"id": r.id, "attempt": r.attempt, "state": r.state.value,
                                  "action": r.action, "correlation": r.correlation_id})
        return out
    return asyncio.run(load())


def test_a_canary_rollout_completes_on_every_device(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    write_rollout(source, rollout_yaml())
    simulator_factory(DEVICES, "--speed", "40", "--seed", "1")
    controller = controller_factory(source)
    controller.start()
    status = wait_until(lambda: (s := phase_of(controller)()).get("phase") == "Completed" and s,
                        120, lambda: f"not completed: {phase_of(controller)()}\n"
                                     f"{controller.tail()}")
    assert status["targeted"] == DEVICES
    assert status["counts"]["failed"] == 0
    wait_until(lambda: agent_versions(controller) == {"1.0.6": DEVICES}, 30,
               lambda: f"devices not all on 1.0.6: {agent_versions(controller)}")
    events = controller.get("/api/v1/rollouts/agent-rollout/events?limit=1000")["items"]
    reasons = [e["reason"] for e in events]
    assert reasons.count("StepStarted") >= 4 or len(events) >= 4, reasons


def test_injected_failures_pause_the_rollout_in_its_canary(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(DEVICES, "--speed", "40", "--seed", "2", "--fail-rate", "0.3")
    controller = controller_factory(source)
    controller.start()
    # The whole fleet reports in first: the canary is 5 % of what is targeted, so a
    # rollout that starts while devices are still connecting picks from fewer devices.
    wait_until(lambda: len(controller.devices()) == DEVICES, 60, "fleet did not report in")
    write_rollout(source, rollout_yaml(failure="action: pause"))
    status = wait_until(lambda: (s := phase_of(controller)()).get("phase") == "Paused"
                        and s.get("currentStep") == 0 and s, 120,
                        lambda: f"not paused in the canary: {phase_of(controller)()}\n"
                                f"{controller.tail()}")
    assert status["failureRate"] > 10
    records = records_per_device(controller.store)
    canary = 50  # 5 % of 1,000
    assert len(records) <= canary, f"{len(records)} devices touched, canary is {canary}"
    versions = agent_versions(controller)
    untouched = [d for d in controller.devices() if d["uuid"] not in records]
    assert len(untouched) >= DEVICES - canary
    assert all(d["versions"]["agent"] == "1.0.5" for d in untouched), versions


def test_rollback_action_puts_the_canary_back_on_its_old_version(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    write_rollout(source, rollout_yaml(failure="action: rollback"))
    simulator_factory(DEVICES, "--speed", "40", "--seed", "3", "--fail-rate", "0.3")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: phase_of(controller)().get("phase") == "RolledBack", 120,
               lambda: f"not rolled back: {phase_of(controller)()}\n{controller.tail()}")
    touched = records_per_device(controller.store)
    assert touched, "the canary touched no device"

    def all_back() -> bool:
        versions = {d["uuid"]: d["versions"]["agent"] for d in controller.devices()}
        return all(versions[u] == "1.0.5" for u in touched)

    wait_until(all_back, 60, lambda: "canary devices not back on 1.0.5: "
               + json.dumps(collections.Counter(
                   d["versions"]["agent"] for d in controller.devices()
                   if d["uuid"] in touched)))


def test_a_controller_killed_mid_rollout_finishes_without_losing_or_duplicating_records(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    write_rollout(source, rollout_yaml())
    simulator_factory(DEVICES, "--speed", "8", "--seed", "4")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: phase_of(controller)().get("currentStep", 0) >= 2, 120,
               lambda: f"never reached step 3: {phase_of(controller)()}\n{controller.tail()}")
    controller.kill()
    restarted = controller_factory(source, store=controller.store, port=controller.port)
    restarted.start()
    wait_until(lambda: phase_of(restarted)().get("phase") == "Completed", 180,
               lambda: f"not completed after restart: {phase_of(restarted)()}\n"
                       f"{restarted.tail()}")
    wait_until(lambda: agent_versions(restarted) == {"1.0.6": DEVICES}, 30,
               lambda: f"devices not all on 1.0.6: {agent_versions(restarted)}")
    records = records_per_device(restarted.store)
    assert len(records) == DEVICES, "every device has its record"
    for device, attempts in records.items():
        ids = [a["id"] for a in attempts]
        assert len(ids) == len(set(ids)), f"{device}: duplicated record"
        updates = [a for a in attempts if a["action"] == "update"]
        assert len({a["attempt"] for a in updates}) == len(updates), (device, attempts)
        assert [a["state"] for a in updates].count("succeeded") == 1, (device, attempts)
