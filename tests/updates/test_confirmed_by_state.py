"""Truthful records: an open update whose device reports the target version in its retained
state is settled `succeeded` (ConfirmedByReportedState) instead of timing out, whether or
not its statuses arrived; in the pure rule and in the store on both backends."""

from __future__ import annotations

import dataclasses

import pytest

from fleetwave.protocol.messages import ReportedState
from fleetwave.store import Store
from fleetwave.updates.model import Decision, DecisionKind, Reason, UpdateState
from fleetwave.updates.transitions import Ignored, apply_decision, confirm_by_state
from tests.store.records import update

TARGET = {"agent": "1.0.6"}


@pytest.mark.parametrize(("changes", "versions", "received_at", "settled"), [
    pytest.param({}, TARGET, 200.0, True, id="pending, state shows the target"),
    pytest.param({"state": UpdateState.IN_PROGRESS, "sent_at": 150.0}, TARGET, 200.0, True,
                 id="in progress, its succeeded status lost"),
    pytest.param({}, {"agent": "1.0.5"}, 200.0, False, id="still on the old version"),
    pytest.param({}, {"other": "1.0.6"}, 200.0, False, id="another component"),
    pytest.param({}, TARGET, 50.0, False, id="state older than the record"),
    pytest.param({"force": True}, TARGET, 200.0, False, id="forced: was on it already"),
    pytest.param({"action": "rollback"}, TARGET, 200.0, False, id="rollbacks wait for status"),
    pytest.param({"state": UpdateState.TIMEOUT}, TARGET, 200.0, False, id="already final"),
])
def test_the_rule(changes: dict[str, object], versions: dict[str, str], received_at: float,
                  settled: bool) -> None:
    record = update(created_at=100.0, **changes)
    result = confirm_by_state(record, versions, received_at)
    assert result.changed is settled
    if settled:
        assert result.record is not None
        assert (result.record.state, result.record.reason, result.record.completed_at,
                result.record.progress) == (UpdateState.SUCCEEDED,
                                            Reason.CONFIRMED_BY_REPORTED_STATE, 200.0, 100)
    else:
        assert result.ignored in (Ignored.NOT_CONFIRMED, Ignored.TERMINAL)


def test_a_settled_update_can_no_longer_time_out() -> None:
    settled = confirm_by_state(update(), TARGET, 200.0).record
    assert settled is not None
    late = apply_decision(settled, Decision(DecisionKind.TIMEOUT, 900.0))
    assert not late.changed and late.ignored == Ignored.TERMINAL


async def test_the_store_settles_open_updates_from_reported_state(store: Store) -> None:
    await store.updates.create([
        update("u1", device="dev-a", created_at=100.0),
        update("u2", device="dev-b", created_at=100.0),
        update("u3", device="dev-c", created_at=100.0),
    ])
    settled = await store.devices.apply_messages([
        ReportedState("dev-a", TARGET, 200.0),           # its status was lost
        ReportedState("dev-b", {"agent": "1.0.5"}, 200.0),  # not there yet
        ReportedState("dev-c", TARGET, 90.0),            # before the update was planned
    ])
    assert [(r.id, r.state, r.reason) for r in settled] == [
        ("u1", UpdateState.SUCCEEDED, Reason.CONFIRMED_BY_REPORTED_STATE)]
    stored = {r.id: r for r in await store.updates.of_rollout("r1")}
    assert stored["u1"] == dataclasses.replace(settled[0])
    assert stored["u2"].state == stored["u3"].state == UpdateState.PENDING
    # The retained state arrives again on every resync: nothing changes a second time.
    assert await store.devices.apply_messages([ReportedState("dev-a", TARGET, 300.0)]) == []
