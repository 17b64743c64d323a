"""One replica plans at a time: the Lease, its renewals, conflicts and takeovers.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py` with
resourceVersions and resourceVersion preconditions that answer 409 Conflict)
stands in at the HTTP boundary; it does not emulate schema validation,
defaulting or RBAC. Lease durations are shortened to about a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fleetwave.operator.lease import micro_time
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout, sent
from tests.operator.doubles import RecordingEngine

LEASES = "/apis/coordination.k8s.io/v1/namespaces/fleetwave/leases"
LEASE = f"{LEASES}/fleetwave-operator"
KEY = ("coordination.k8s.io/v1/leases", "fleetwave", "fleetwave-operator")


def _lease(apiserver: ApiServer) -> dict[str, Any]:
    return dict(apiserver.objects[KEY].raw)


async def test_first_replica_creates_the_lease_and_renews_it(apiserver: ApiServer,
                                                             operators: Any) -> None:
    engine = RecordingEngine()
    op = await operators(engine, identity="replica-a", lease_duration=1.5)
    await eventually(lambda: op.runtime.leading and engine.running, message="leading")
    creates = [r for r in apiserver if r.method == "POST" and r.url.path == LEASES]
    assert len(creates) == 1
    body = sent(creates[0])
    assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"
    assert body["metadata"] == {"name": "fleetwave-operator", "namespace": "fleetwave"}
    assert body["spec"]["holderIdentity"] == "replica-a"
    assert body["spec"]["leaseDurationSeconds"] == 2
    assert body["spec"]["leaseTransitions"] == 0
    assert body["spec"]["acquireTime"] == body["spec"]["renewTime"]
    await eventually(lambda: len([r for r in apiserver if r.method == "PATCH"
                                  and r.url.path == LEASE]) >= 2, message="two renewals")
    renewals = [sent(r) for r in apiserver if r.method == "PATCH" and r.url.path == LEASE]
    # Each renewal is guarded by the resourceVersion of the Lease it last saw.
    assert all(r["metadata"]["resourceVersion"] for r in renewals)
    assert all(set(r["spec"]) == {"holderIdentity", "renewTime"} for r in renewals)
    assert renewals[0]["metadata"]["resourceVersion"] != renewals[1]["metadata"][
        "resourceVersion"]
    assert apiserver.conflicts == []
    assert _lease(apiserver)["spec"]["holderIdentity"] == "replica-a"


async def test_lease_held_by_another_keeps_this_replica_standby_until_it_expires(
        apiserver: ApiServer, operators: Any) -> None:
    status, _ = await kubectl(apiserver, "POST", LEASES, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "fleetwave-operator", "namespace": "fleetwave"},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 1,
                 "renewTime": micro_time(0), "leaseTransitions": 4}}, "application/json")
    assert status in (200, 201)
    engine = RecordingEngine()
    op = await operators(engine, identity="replica-b", lease_duration=1.0)
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("r1"),
                  "application/json")
    await eventually(lambda: "r1" in engine.rollouts, message="standby mirrors CRs")
    for _ in range(6):  # "elsewhere" keeps renewing for 1.5 s: it stays the leader
        await kubectl(apiserver, "PATCH", LEASE, {"spec": {"renewTime": micro_time(1)}})
        await asyncio.sleep(0.25)
        assert not op.runtime.leading
    assert engine.passes == 0 and engine.starts == 0
    assert not [r for r in apiserver if r.url.path.endswith("/status")]
    # "elsewhere" stops renewing: after leaseDurationSeconds without change, takeover.
    await eventually(lambda: op.runtime.leading and engine.running, timeout=5,
                     message="takeover")
    takeover = [sent(r) for r in apiserver if r.method == "PATCH" and r.url.path == LEASE
                and sent(r)["spec"].get("acquireTime")]
    assert len(takeover) == 1
    assert takeover[0]["spec"]["holderIdentity"] == "replica-b"
    assert takeover[0]["spec"]["leaseTransitions"] == 5
    assert takeover[0]["metadata"]["resourceVersion"]  # guarded by what it read
    assert _lease(apiserver)["spec"]["holderIdentity"] == "replica-b"


async def test_conflict_on_renewal_means_another_holder_and_stops_planning_at_once(
        apiserver: ApiServer, operators: Any) -> None:
    engine = RecordingEngine()
    op = await operators(engine, identity="replica-a", lease_duration=3.0)
    await eventually(lambda: op.runtime.leading and engine.running, message="leading")
    # Another replica takes the Lease over (it changes holder and resourceVersion).
    await kubectl(apiserver, "PATCH", LEASE, {"spec": {"holderIdentity": "replica-z",
                                                       "renewTime": micro_time(2)}})
    await eventually(lambda: apiserver.conflicts, timeout=3, message="409 on renewal")
    assert apiserver.conflicts[0].url.path == LEASE
    await eventually(lambda: not op.runtime.leading and not engine.running, timeout=2,
                     message="stepped down")
    passes = engine.passes
    await asyncio.sleep(0.5)
    assert engine.passes == passes  # the engine loop is stopped, not merely idle
    assert _lease(apiserver)["spec"]["holderIdentity"] == "replica-z"


async def test_two_replicas_only_one_plans_and_the_standby_takes_over(
        apiserver: ApiServer, operators: Any) -> None:
    await kubectl(apiserver, "POST", ROLLOUTS.format(ns="fleet"), rollout("r1"),
                  "application/json")
    engine_a, engine_b = RecordingEngine(), RecordingEngine()
    a = await operators(engine_a, identity="replica-a", lease_duration=1.5)
    b = await operators(engine_b, identity="replica-b", lease_duration=1.5)
    await eventually(lambda: a.runtime.leading or b.runtime.leading, message="a leader")
    leader, standby = (a, b) if a.runtime.leading else (b, a)
    leader_engine, standby_engine = ((engine_a, engine_b) if leader is a
                                     else (engine_b, engine_a))
    await eventually(lambda: "r1" in standby_engine.rollouts, message="standby mirror")
    await asyncio.sleep(1.5)  # several renewals
    assert leader.runtime.leading and not standby.runtime.leading
    assert leader_engine.passes > 0
    assert standby_engine.passes == 0 and standby_engine.starts == 0
    await leader.shutdown()  # releases the Lease
    standby_identity = "replica-b" if leader is a else "replica-a"
    # Released: empty, or already taken by the standby, which may be that quick.
    assert _lease(apiserver)["spec"].get("holderIdentity") in (None, standby_identity)
    await eventually(lambda: standby.runtime.leading and standby_engine.passes > 0,
                     timeout=3, message="standby took over")
    assert standby_engine.starts == 1
    assert _lease(apiserver)["spec"]["leaseTransitions"] == 1


async def test_standby_takes_over_from_a_crashed_leader_after_expiry(
        apiserver: ApiServer, operators: Any) -> None:
    engine_a, engine_b = RecordingEngine(), RecordingEngine()
    a = await operators(engine_a, identity="replica-a", lease_duration=1.0)
    await eventually(lambda: a.runtime.leading, message="a leads")
    b = await operators(engine_b, identity="replica-b", lease_duration=1.0)
    await asyncio.sleep(0.5)
    assert not b.runtime.leading

    async def crash() -> None:  # a process that dies does not release
        return None

    a.runtime.elector.release = crash  # type: ignore[method-assign]
    await a.shutdown()
    assert _lease(apiserver)["spec"]["holderIdentity"] == "replica-a"
    await eventually(lambda: b.runtime.leading and engine_b.running, timeout=4,
                     message="takeover after expiry")
    assert _lease(apiserver)["spec"]["holderIdentity"] == "replica-b"
