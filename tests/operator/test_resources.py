"""Rollout CRs reach the engine through the real kopf handlers: apply, patch, delete, invalid.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py` with
resourceVersions, preconditions and the status subresource) stands in at the
HTTP boundary, and the tests check the exact requests the operator sends. It
does not emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

from typing import Any

from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout, sent
from tests.operator.doubles import RecordingEngine

NS = "fleet"
BASE = ROLLOUTS.format(ns=NS)


async def _leading(operators: Any, engine: RecordingEngine) -> Any:
    op = await operators(engine)
    await eventually(lambda: op.runtime.leading and engine.running, message="leading")
    return op


async def test_applied_rollout_reaches_engine_with_generation_and_revision(
        apiserver: ApiServer, operators: Any) -> None:
    engine = RecordingEngine()
    await _leading(operators, engine)
    status, created = await kubectl(apiserver, "POST", BASE, rollout("agent-1-0-6"),
                                    "application/json")
    assert status == 201 or status == 200, created
    await eventually(lambda: "agent-1-0-6" in engine.rollouts, message="rollout in engine")
    seen = engine.rollouts["agent-1-0-6"]
    assert seen.generation == 1
    assert seen.source.kind == "kubernetes"
    assert seen.source.revision == created["metadata"]["resourceVersion"]
    assert seen.source.path == f"{NS}/agent-1-0-6"
    assert seen.spec.version == "1.0.6"
    assert seen.namespace == NS


async def test_kubectl_patch_paused_flows_through_as_spec(apiserver: ApiServer,
                                                         operators: Any) -> None:
    engine = RecordingEngine()
    await _leading(operators, engine)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    assert engine.rollouts["r1"].spec.paused is False
    status, patched = await kubectl(apiserver, "PATCH", f"{BASE}/r1", {"spec": {"paused": True}})
    assert status == 200
    await eventually(lambda: engine.rollouts["r1"].spec.paused, message="paused in engine")
    assert engine.rollouts["r1"].generation == 2
    assert engine.rollouts["r1"].source.revision == patched["metadata"]["resourceVersion"]


async def test_deleted_rollout_is_gone_from_engine(apiserver: ApiServer, operators: Any) -> None:
    engine = RecordingEngine()
    await _leading(operators, engine)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await kubectl(apiserver, "POST", BASE, rollout("r2"), "application/json")
    await eventually(lambda: {"r1", "r2"} <= set(engine.rollouts))
    status, _ = await kubectl(apiserver, "DELETE", f"{BASE}/r1")
    assert status == 200
    await eventually(lambda: "r1" not in engine.rollouts, message="r1 removed")
    assert "r2" in engine.rollouts
    # optional=True: the operator added no finalizer, so the delete was not held up.
    assert not any(r.body and b"finalizers" in r.body for r in list(apiserver)
                   if r.method == "PATCH")


async def test_status_is_merge_patched_to_the_status_subresource(apiserver: ApiServer,
                                                                 operators: Any) -> None:
    engine = RecordingEngine()
    await _leading(operators, engine)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")

    def status_patches() -> list[Any]:
        return [r for r in list(apiserver) if r.method == "PATCH"
                and r.url.path == f"{BASE}/r1/status"]

    await eventually(status_patches, message="a status patch")
    first = status_patches()[0]
    assert first.headers["Content-Type"].startswith("application/merge-patch+json")
    assert sent(first)["status"]["phase"] == "Progressing"
    assert sent(first)["status"]["observedGeneration"] == 1
    assert sent(first)["status"]["progress"] == "1/4"
    assert sent(first)["status"]["conditions"][0]["type"] == "Progressing"
    stored = apiserver.objects["fleetwave.io/v1alpha1/rollouts", NS, "r1"].raw
    assert stored["status"]["phase"] == "Progressing"
    # The engine reports every 50 ms; an unchanged status is never sent again.
    count = len(status_patches())
    engine.statuses["r1"] = {"phase": "Completed", "currentStep": 1, "targeted": 4,
                             "progress": "4/4", "counts": {"succeeded": 4},
                             "failureRate": 0.0, "conditions": []}
    await eventually(lambda: len(status_patches()) > count, message="second patch")
    second = status_patches()[count]
    assert sent(second) == {"status": {"phase": "Completed", "currentStep": 1,
                                      "progress": "4/4", "counts": {"succeeded": 4,
                                                                    "pending": None},
                                      "conditions": []}}
    no_status_on_main = [r for r in list(apiserver) if r.method == "PATCH"
                         and r.url.path == f"{BASE}/r1" and "status" in (sent(r) or {})]
    assert no_status_on_main == []


async def test_status_patches_are_coalesced_per_object(apiserver: ApiServer,
                                                       operators: Any) -> None:
    engine = RecordingEngine()
    op = await operators(engine, status_interval=1.0)
    await eventually(lambda: op.runtime.leading and engine.running)
    await kubectl(apiserver, "POST", BASE, rollout("r1"), "application/json")
    await eventually(lambda: "r1" in engine.rollouts)
    path = f"{BASE}/r1/status"
    await eventually(lambda: any(r.url.path == path for r in list(apiserver)))
    for step in range(20):  # twenty different statuses within a fraction of the interval
        engine.statuses["r1"] = {"phase": "Progressing", "currentStep": 0,
                                 "progress": f"{step}/40", "targeted": 40}
        await op.runtime.status.on_status("r1", {**engine.statuses["r1"],
                                                 "observedGeneration": 1})
    engine.statuses["r1"] = {"phase": "Progressing", "currentStep": 0, "progress": "19/40",
                             "targeted": 40}
    await eventually(lambda: apiserver.objects["fleetwave.io/v1alpha1/rollouts", NS, "r1"]
                     .raw["status"].get("progress") == "19/40", timeout=5)
    patches = [r for r in list(apiserver) if r.url.path == path]
    assert len(patches) <= 3, [sent(p) for p in patches]


async def test_invalid_rollout_gets_condition_and_event_naming_the_field(
        apiserver: ApiServer, operators: Any) -> None:
    engine = RecordingEngine()
    await _leading(operators, engine)
    bad = rollout("broken", strategy={"steps": [{"percent": 150}]})
    await kubectl(apiserver, "POST", BASE, bad, "application/json")
    await kubectl(apiserver, "POST", BASE, rollout("fine"), "application/json")
    await eventually(lambda: "fine" in engine.rollouts)
    assert "broken" not in engine.rollouts

    def stored() -> Any:
        return apiserver.objects["fleetwave.io/v1alpha1/rollouts", NS, "broken"].raw

    await eventually(lambda: stored().get("status", {}).get("phase") == "Failed",
                     message="Failed status")
    condition = stored()["status"]["conditions"][0]
    assert condition["type"] == "Ready" and condition["status"] == "False"
    assert condition["reason"] == "InvalidSpec"
    assert "spec.strategy.steps[0].percent" in condition["message"]
    assert condition["observedGeneration"] == 1
    events = "/api/v1/namespaces/fleet/events"
    await eventually(lambda: any(r.method == "POST" and r.url.path == events
                                 for r in list(apiserver)), message="event")
    event = next(sent(r) for r in list(apiserver)
                 if r.method == "POST" and r.url.path == events)
    assert event["type"] == "Warning" and event["reason"] == "InvalidSpec"
    assert "spec.strategy.steps[0].percent" in event["message"]
    assert event["involvedObject"]["name"] == "broken"
    assert event["involvedObject"]["kind"] == "Rollout"
    assert event["involvedObject"]["uid"] == stored()["metadata"]["uid"]
    # Fixed by the user: it reaches the engine.
    await kubectl(apiserver, "PATCH", f"{BASE}/broken",
                  {"spec": {"strategy": {"steps": [{"percent": 100}]}}})
    await eventually(lambda: "broken" in engine.rollouts, message="fixed rollout in engine")
    assert engine.rollouts["broken"].generation == 2
