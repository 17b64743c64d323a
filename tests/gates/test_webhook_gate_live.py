"""A step's webhook gate through a real `fleetwave run`, Mosquitto and `fleetwave simulate`.

The gate is an aiohttp server the test runs. It answers closed: the rollout finishes
its canary and then waits (phase Waiting, condition reason GateClosed, seen through
GET /api/v1/rollouts/{name}) without commanding another device, and is asked again
after the back-off. Then it answers open: the gated step starts and the rollout
completes. Every request is HMAC-signed with the secret named by `secretRef`, and
every answer is in the rollout's events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwave.runtime.gates import GateRunner
from tests.gates.gate_server import GateServer, serving_in_thread
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.rollouts import rollout_yaml

pytestmark = pytest.mark.slow

DEVICES = 100
SECRET = "gate-secret-for-the-test"
NAME = "gated-agent"
FIRST_BACKOFF = GateRunner(lambda: None).first_backoff
"""The controller's back-off after the first closed answer (seconds)."""


def gated_rollout(url: str) -> str:
    return rollout_yaml(NAME, {"steps": [
        {"percent": 20},
        {"percent": 100, "gate": {"webhook": {"url": url, "secretRef": "GATE_SECRET"}}},
    ], "maxInFlight": 100})


@pytest.fixture
def gate() -> Iterator[GateServer]:
    with serving_in_thread(GateServer(SECRET)) as server:
        yield server


def status_of(controller: Controller) -> dict[str, Any]:
    rollout = controller.get(f"/api/v1/rollouts/{NAME}", ok_only=False)
    if not isinstance(rollout, dict) or "name" not in rollout:
        return {}  # not loaded yet
    status: dict[str, Any] = rollout["status"]
    return status


def gate_closed(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Waiting" and any(
        c.get("reason") == "GateClosed" for c in status.get("conditions", []))


def test_a_closed_gate_holds_the_step_and_an_open_one_lets_the_rollout_complete(
        tmp_path: Path, gate: GateServer, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(DEVICES, "--speed", "40", "--seed", "7")
    controller = controller_factory(source, env={"GATE_SECRET": SECRET})
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 60, "fleet did not report in")
    (source / "gated.yaml").write_text(gated_rollout(gate.url))

    # Closed: the canary completes, then the rollout waits on its gate.
    wait_until(lambda: gate.requests and gate_closed(status_of(controller)), 60,
               lambda: f"not waiting on its gate: {status_of(controller)}, "
                       f"{len(gate.requests)} request(s)\n{controller.tail()}")
    waiting = status_of(controller)
    canary = waiting["counts"]["succeeded"]
    assert 0 < canary < DEVICES and waiting["currentStep"] == 0, waiting
    devices = controller.get(f"/api/v1/rollouts/{NAME}/devices?limit=1000")
    assert devices["total"] == canary, "a device beyond the canary was commanded"

    # Open from the next question on: asked again after the back-off, the step starts.
    gate.answer = (200, {"allow": True})
    done = wait_until(lambda: (s := status_of(controller)).get("phase") == "Completed" and s,
                      90, lambda: f"not completed after the gate opened: "
                                  f"{status_of(controller)}\n{controller.tail()}")
    assert done["counts"]["failed"] == 0 and done["targeted"] == DEVICES
    assert {d["versions"]["agent"] for d in controller.devices()} == {"1.0.6"}

    closed, opened = gate.requests  # asked twice, never again once open
    for request in (closed, opened):
        assert request.signed, "the signature does not verify with the secret"
        assert request.body == {"rollout": NAME, "step": 2, "version": "1.0.6",
                                "counts": request.body["counts"]}
    # Nothing beyond the canary was in flight or done while the gate was closed.
    counts = opened.body["counts"]
    assert counts["succeeded"] == canary and counts["pending"] == counts["in_progress"] == 0
    # Asked again once the back-off is over (counted from the pass that asked, so the
    # requests' arrivals may be a little closer), not only at the next resync (30 s).
    assert FIRST_BACKOFF - 0.5 <= opened.at - closed.at < FIRST_BACKOFF + 3, \
        opened.at - closed.at
    events = controller.get(f"/api/v1/rollouts/{NAME}/events?limit=1000")["items"]
    answers = [e for e in events if e["reason"] in ("GateClosed", "GateOpened")]
    assert [e["reason"] for e in answers] == ["GateClosed", "GateOpened"], answers
    assert all(e["actor"] == "gate" and "step 2" in e["message"] for e in answers), answers
