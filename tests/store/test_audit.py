"""Rollout state, the event log, retention and the per-device export."""

from __future__ import annotations

import json

from fleetwave.protocol.messages import ReportedState
from fleetwave.protocol.messages import StatusType as T
from fleetwave.store import Event, Store
from fleetwave.updates.model import UpdateState
from tests.store.records import status, update

DAY = 86400.0


async def test_rollout_state_is_saved_replaced_and_deleted(store: Store) -> None:
    await store.rollouts.save("agent-1-0-6", 1, "h1", {"step": 0}, {"phase": "Progressing"},
                             now=10.0)
    await store.rollouts.save("agent-1-0-6", 2, "h2", {"step": 1, "paused": {"by": "user"}},
                             {"phase": "Paused"}, now=20.0)
    await store.rollouts.save("other", 1, "h", {}, {}, now=30.0)
    loaded = await store.rollouts.load()
    assert sorted(loaded) == ["agent-1-0-6", "other"]
    row = loaded["agent-1-0-6"]
    assert (row.generation, row.spec_hash, row.state, row.status, row.updated_at) == (
        2, "h2", {"step": 1, "paused": {"by": "user"}}, {"phase": "Paused"}, 20.0)
    await store.rollouts.delete("agent-1-0-6")
    await store.rollouts.delete("never-existed")
    assert list(await store.rollouts.load()) == ["other"]


async def test_events_are_paginated_oldest_first_per_rollout(store: Store) -> None:
    await store.events.append([Event(time=float(i), rollout="r1", type="StepStarted",
                                     reason="StepStarted", message=f"step {i}")
                               for i in range(25)])
    await store.events.append([Event(time=5.0, rollout="r2", type="Paused", reason="User",
                                     message="paused by alice", actor="alice", device=None),
                               Event(time=6.0, rollout="r1", type="DeviceFailed",
                                     reason="DeviceReportedFailure", message="exit 1",
                                     device="dev-a")])
    await store.events.append([])
    page = await store.events.page("r1", offset=20, limit=10)
    assert page.total == 26
    assert [e.message for e in page.items] == ["step 20", "step 21", "step 22", "step 23",
                                               "step 24", "exit 1"]
    assert page.items[-1].device == "dev-a" and page.items[0].actor == "controller"
    ids = [e.id for e in (await store.events.page("r1", limit=100)).items]
    assert ids == sorted(ids) and len(set(ids)) == 26
    other = await store.events.page("r2")
    assert [(e.actor, e.reason) for e in other.items] == [("alice", "User")]


async def test_prune_removes_old_terminal_records_and_events_only(store: Store) -> None:
    now = 100 * DAY
    await store.updates.create([
        update("old-done", device="a", state=UpdateState.SUCCEEDED, created_at=DAY),
        update("old-open", device="b", created_at=DAY),
        update("new-done", device="c", state=UpdateState.FAILED, created_at=95 * DAY),
    ])
    await store.events.append([Event(time=DAY, rollout="r1", type="t", reason="r", message="old"),
                               Event(time=99 * DAY, rollout="r1", type="t", reason="r",
                                     message="new")])
    assert await store.retention.prune(older_than_days=30, now=now) == 2
    remaining = {r.id for r in await store.updates.of_rollout("r1")}
    assert remaining == {"old-open", "new-done"}
    assert [e.message for e in (await store.events.page("r1")).items] == ["new"]
    assert await store.retention.prune(older_than_days=30, now=now) == 0


async def test_export_is_the_devices_whole_history_as_json(store: Store) -> None:
    await store.devices.apply_messages([ReportedState("dev-a", {"agent": "1.0.6"}, 50.0,
                                                     labels={"env": "prod"})])
    await store.updates.create([update("u1", created_at=10.0),
                                update("u-other", device="dev-b")])
    await store.updates.apply_statuses([status(T.FAILED, "corr-u1", error="no space")])
    await store.updates.create([update("u2", attempt=2, created_at=20.0)])
    await store.events.append([Event(time=1.0, rollout="r1", type="DeviceFailed", reason="r",
                                     message="m", device="dev-a"),
                               Event(time=2.0, rollout="r1", type="StepStarted", reason="r",
                                     message="not about dev-a")])
    exported = await store.retention.export_device("dev-a")
    assert json.loads(json.dumps(exported)) == exported
    assert exported["device"]["labels"] == {"env": "prod"}
    assert [(u["id"], u["state"], u["attempt"]) for u in exported["updates"]] == [
        ("u2", "pending", 2), ("u1", "failed", 1)]
    assert exported["updates"][1]["error"] == "no space"
    assert {"correlationId", "fromVersion", "toVersion", "createdAt", "completedAt",
            "triggeredBy", "exitCode"} <= set(exported["updates"][0])
    assert [e["message"] for e in exported["events"]] == ["m"]
    unknown = await store.retention.export_device("dev-nobody")
    assert unknown == {"device": None, "updates": [], "events": []}
