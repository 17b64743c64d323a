"""Promote, abort and rollback through annotations: once per new value, never replayed.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py`) stands in at the
HTTP boundary; it does not emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout, sent
from tests.operator.doubles import RecordingEngine

NS = "fleet"
BASE = ROLLOUTS.format(ns=NS)


def _annotate(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations}}


@pytest.mark.parametrize(("annotation", "value", "expected"), [
    pytest.param("fleetwave.io/promote", "2026-11-23T10:00", ("promote", None), id="promote"),
    pytest.param("fleetwave.io/abort", "now", ("abort", None), id="abort"),
    pytest.param("fleetwave.io/rollback", "1", ("rollback", None), id="rollback"),
    pytest.param("fleetwave.io/promote-device", "dev-0001", ("promote", "dev-0001"),
                 id="promote-device"),
])
async def test_annotation_calls_engine_control_once(
        apiserver: ApiServer, operators: Any, annotation: str, value: str,
        expected: tuple[str, str | None]) -> None:
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    await kubectl(apiserver, "PATCH", f"{BASE}/r1", _annotate(**{annotation: value}))
    await eventually(lambda: engine.controls, message="control called")
    await asyncio.sleep(0.5)  # the handled-annotation patch echoes back: no second call
    assert engine.controls == [("r1", expected[0], f"kubernetes:{annotation}", expected[1])]
    stored = apiserver.objects["fleetwave.io/v1alpha1/rollouts", NS, "r1"].raw
    assert stored["metadata"]["annotations"][f"{annotation}-handled"] == value
    record = [sent(r) for r in apiserver if r.method == "PATCH" and r.url.path == f"{BASE}/r1"
              and "handled" in r.body.decode()]
    assert record == [_annotate(**{f"{annotation}-handled": value})]


async def test_a_new_value_promotes_again_and_the_same_value_does_not(
        apiserver: ApiServer, operators: Any) -> None:
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    await kubectl(apiserver, "PATCH", f"{BASE}/r1", _annotate(**{"fleetwave.io/promote": "a"}))
    await eventually(lambda: len(engine.controls) == 1)
    await kubectl(apiserver, "PATCH", f"{BASE}/r1", {"spec": {"paused": True}})
    await eventually(lambda: engine.rollouts["r1"].spec.paused)
    await kubectl(apiserver, "PATCH", f"{BASE}/r1", _annotate(**{"fleetwave.io/promote": "b"}))
    await eventually(lambda: len(engine.controls) == 2)
    await asyncio.sleep(0.3)
    assert [c[1] for c in engine.controls] == ["promote", "promote"]


async def test_restart_does_not_replay_a_handled_annotation(apiserver: ApiServer,
                                                            operators: Any) -> None:
    engine = RecordingEngine()
    first = await operators(engine, identity="replica-a")
    await eventually(lambda: first.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    await kubectl(apiserver, "PATCH", f"{BASE}/r1", _annotate(**{"fleetwave.io/abort": "x"}))
    await eventually(lambda: engine.controls)
    await first.shutdown()

    restarted = RecordingEngine()
    second = await operators(restarted, identity="replica-a-restarted")
    await eventually(lambda: second.runtime.leading and restarted.running and
                     "r1" in restarted.rollouts, message="restarted leader")
    await asyncio.sleep(0.5)
    assert restarted.controls == []


async def test_annotation_set_while_no_leader_is_applied_on_takeover(
        apiserver: ApiServer, operators: Any) -> None:
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await kubectl(apiserver, "PATCH", f"{BASE}/r1",
                  _annotate(**{"fleetwave.io/promote": "early"}))
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.controls, message="promoted")
    await asyncio.sleep(0.3)
    assert engine.controls == [("r1", "promote", "kubernetes:fleetwave.io/promote", None)]


async def test_rejected_control_becomes_a_warning_event(apiserver: ApiServer,
                                                        operators: Any) -> None:
    engine = RecordingEngine()
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", BASE, rollout("Bad_Name", strategy={}),
                  "application/json")
    await kubectl(apiserver, "PATCH", f"{BASE}/Bad_Name",
                  _annotate(**{"fleetwave.io/promote": "1"}))
    events = f"/api/v1/namespaces/{NS}/events"
    await eventually(lambda: any(r.method == "POST" and r.url.path == events
                                 and sent(r)["reason"] == "ControlRejected" for r in apiserver),
                     message="ControlRejected event")
    assert engine.controls == []
