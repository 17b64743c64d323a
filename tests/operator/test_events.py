"""Rollout transitions become Kubernetes Events, aggregated on repeat.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py`) stands in at the
HTTP boundary; it does not emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleetwave.operator.events import camel_case
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout, sent
from tests.operator.doubles import RecordingEngine

NS = "fleet"
EVENTS = f"/api/v1/namespaces/{NS}/events"


async def _setup(apiserver: ApiServer, operators: Any) -> tuple[RecordingEngine, Any]:
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns=NS), rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    return engine, op


def _event_requests(apiserver: ApiServer, method: str) -> list[Any]:
    return [r for r in apiserver if r.method == method and r.url.path.startswith(EVENTS)]


async def test_transition_creates_an_event_on_the_rollout(apiserver: ApiServer,
                                                          operators: Any) -> None:
    engine, _ = await _setup(apiserver, operators)
    engine.on_event({"rollout": "r1", "type": "Normal", "reason": "StepStarted",
                     "message": "step 1 of 2: 25% (1 device)", "device": None, "time": 0})
    await eventually(lambda: _event_requests(apiserver, "POST"), message="event created")
    body = sent(_event_requests(apiserver, "POST")[0])
    uid = apiserver.objects["fleetwave.io/v1alpha1/rollouts", NS, "r1"].raw["metadata"]["uid"]
    assert body["type"] == "Normal"
    assert body["reason"] == "StepStarted"
    assert body["message"] == "step 1 of 2: 25% (1 device)"
    assert body["count"] == 1
    assert body["involvedObject"] == {"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
                                      "name": "r1", "namespace": NS, "uid": uid}
    assert body["metadata"]["namespace"] == NS
    assert body["source"] == {"component": "fleetwave-operator"}


async def test_repeated_event_is_counted_with_a_patch(apiserver: ApiServer,
                                                      operators: Any) -> None:
    engine, _ = await _setup(apiserver, operators)
    event = {"rollout": "r1", "type": "Warning", "reason": "FailureBudgetExceeded",
             "message": "failure rate 40% > 20%: paused", "device": None, "time": 0}
    for _ in range(3):
        engine.on_event(event)
    await eventually(lambda: len(_event_requests(apiserver, "PATCH")) == 2,
                     message="two aggregating patches")
    created = _event_requests(apiserver, "POST")
    assert len(created) == 1
    name = sent(created[0])["metadata"]["name"]
    patches = _event_requests(apiserver, "PATCH")
    assert [r.url.path for r in patches] == [f"{EVENTS}/{name}"] * 2
    assert [sent(r)["count"] for r in patches] == [2, 3]
    assert all(set(sent(r)) == {"count", "lastTimestamp"} for r in patches)
    stored = apiserver.objects["v1/events", NS, name].raw
    assert stored["count"] == 3
    # A different message is a different Event.
    engine.on_event({**event, "message": "failure rate 45% > 20%: paused"})
    await eventually(lambda: len(_event_requests(apiserver, "POST")) == 2)


async def test_per_device_events_stay_out_of_kubernetes(apiserver: ApiServer,
                                                        operators: Any) -> None:
    engine, _ = await _setup(apiserver, operators)
    engine.on_event({"rollout": "r1", "type": "Warning", "reason": "UpdateFailed",
                     "message": "exit code 3", "device": "dev-1", "time": 0})
    engine.on_event({"rollout": "r1", "type": "Normal", "reason": "Completed",
                     "message": "done", "device": None, "time": 0})
    await eventually(lambda: _event_requests(apiserver, "POST"))
    assert [sent(r)["reason"] for r in _event_requests(apiserver, "POST")] == ["Completed"]


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param("StepStarted", "StepStarted", id="camel"),
    pytest.param("step_started", "StepStarted", id="snake"),
    pytest.param("failure budget exceeded", "FailureBudgetExceeded", id="words"),
    pytest.param("", "Unknown", id="empty"),
])
def test_reasons_are_camel_case(raw: str, expected: str) -> None:
    assert camel_case(raw) == expected
