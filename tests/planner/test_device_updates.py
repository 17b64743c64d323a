"""Per-device decisions, asserted as the list of actions the planner emits."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fleetwave.planner.model import (
    ClearCommand,
    Decide,
    Republish,
    RolloutState,
    SendCancel,
    SendRollback,
    SendUpdate,
)
from fleetwave.planner.plan import plan, plan_deleted, record_ids
from fleetwave.protocol.messages import Container
from fleetwave.updates.model import DecisionKind, Health, UpdateRecord, UpdateState
from tests.planner.fleet import T0, device, make_rollout

ALL = {"strategy": {"steps": [{"percent": 100}], "maxInFlight": 10}}


def rec(state: UpdateState = UpdateState.PENDING, attempt: int = 1, **kw: Any) -> UpdateRecord:
    rid, cid = record_ids("agent-1-0-6", 1, "d1", attempt)
    base = UpdateRecord(id=rid, device="d1", rollout="agent-1-0-6", component="agent",
                        to_version="1.0.6", state=state, attempt=attempt, correlation_id=cid,
                        created_at=T0, updated_at=T0, from_version="1.0.5", sent_at=T0)
    return dataclasses.replace(base, **kw)


def kinds(actions: tuple[Any, ...]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Decide):
            out.append(f"Decide:{a.decision.kind.value}:{a.decision.reason}")
        elif isinstance(a, ClearCommand):
            out.append("ClearCommand")
        else:
            out.append(type(a).__name__)
    return out


CASES = [
    pytest.param([], dict(), 0, ["SendUpdate"], id="new-device-gets-command"),
    pytest.param([], dict(version="1.0.6"), 0, [], id="already-at-version-is-done"),
    pytest.param([rec()], dict(), 60, [], id="pending-within-ack-timeout"),
    pytest.param([rec(sent_at=None)], dict(), 1, ["Republish"],
                 id="stored-but-never-sent-is-sent-now"),
    pytest.param([rec()], dict(), 200, ["Republish"], id="republish-every-ackTimeout/4"),
    pytest.param([rec()], dict(online=False), 200, [], id="no-republish-while-offline"),
    pytest.param([rec()], dict(), 601, ["Decide:timeout:AckTimeout", "ClearCommand"],
                 id="ack-timeout-online"),
    pytest.param([rec()], dict(online=False), 601,
                 ["Decide:timeout:Unreachable", "ClearCommand"], id="ack-timeout-offline"),
    pytest.param([rec(UpdateState.IN_PROGRESS, started_at=T0)], dict(), 901,
                 ["Decide:timeout:UpdateTimeout", "ClearCommand"], id="update-timeout"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0)], dict(version="1.0.6"), 299,
                 [], id="stable-for-not-elapsed"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0)], dict(version="1.0.6"), 300,
                 ["Decide:healthy:None"], id="healthy-after-stable-for"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0)], dict(version="1.0.5"), 300,
                 ["Decide:unhealthy:VersionMismatch"],
                 id="reverted-device-unhealthy-nothing-to-roll-back"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0)],
                 dict(version="1.0.6", online=False), 120,
                 ["Decide:unhealthy:OfflineAfterUpdate", "SendRollback"],
                 id="silent-after-success-unhealthy"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0, health=Health.HEALTHY)],
                 dict(version="1.0.6", online=False), 1200, [],
                 id="silent-after-offlineAfterUpdate-is-fine"),
    pytest.param([rec(UpdateState.SUCCEEDED, completed_at=T0, health=Health.HEALTHY)],
                 dict(version="1.0.4"), 3600, ["SendUpdate"], id="drift-is-corrected"),
    pytest.param([rec(UpdateState.FAILED, completed_at=T0)], dict(), 30, [],
                 id="retry-waits-for-backoff"),
    pytest.param([rec(UpdateState.FAILED, completed_at=T0)], dict(), 60, ["SendUpdate"],
                 id="retry-after-backoff"),
    pytest.param([rec(UpdateState.FAILED, completed_at=T0, started_at=T0),
                  rec(UpdateState.FAILED, attempt=2, created_at=T0 + 60, completed_at=T0 + 70,
                      started_at=T0 + 60)],
                 dict(version="1.0.6-broken"), 4000, ["SendRollback"],
                 id="retries-exhausted-parked-and-rolled-back"),
    pytest.param([rec(UpdateState.TIMEOUT, reason="Unreachable")], dict(online=False), 4000,
                 [], id="unreachable-waits-for-device"),
    pytest.param([rec(UpdateState.TIMEOUT, reason="Unreachable")], dict(), 4000,
                 ["SendUpdate"], id="unreachable-retried-when-back"),
    pytest.param([rec(to_version="1.0.5")], dict(version="1.0.4"), 10,
                 ["SendCancel", "Decide:cancel:Superseded"], id="old-version-superseded"),
    pytest.param([rec(UpdateState.CANCELLED, reason="CancelledByUser")], dict(), 10, [],
                 id="user-cancel-is-respected"),
]


@pytest.mark.parametrize(("records", "dev", "after", "expected"), CASES)
def test_device_actions(records: list[UpdateRecord], dev: dict[str, Any], after: float,
                        expected: list[str]) -> None:
    r = make_rollout(**ALL)
    p = plan(r, [device("d1", **dev)], {"d1": records} if records else {}, None, T0 + after)
    assert kinds(p.actions) == expected


def test_new_attempt_ids_are_deterministic_and_numbered() -> None:
    r = make_rollout(**ALL)
    failed = [rec(UpdateState.FAILED, completed_at=T0)]
    a = plan(r, [device("d1")], {"d1": failed}, None, T0 + 100)
    b = plan(r, [device("d1")], {"d1": failed}, None, T0 + 100)
    (sa,), (sb,) = a.actions, b.actions
    assert isinstance(sa, SendUpdate) and isinstance(sb, SendUpdate)
    assert sa.record.attempt == 2
    assert (sa.record.id, sa.record.correlation_id) == (sb.record.id, sb.record.correlation_id)
    assert sa.record.correlation_id != failed[0].correlation_id
    assert sa.command.correlation_id == sa.record.correlation_id
    assert (sa.command.action, sa.command.version) == ("update", "1.0.6")


def test_republish_keeps_correlation_id() -> None:
    r = make_rollout(**ALL)
    p = plan(r, [device("d1")], {"d1": [rec()]}, None, T0 + 200)
    (a,) = p.actions
    assert isinstance(a, Republish) and a.command.correlation_id == rec().correlation_id


def test_rollback_record_goes_back_to_from_version() -> None:
    r = make_rollout(**ALL)
    p = plan(r, [device("d1", version="1.0.6")],
             {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0)]}, None, T0 + 300,
             check_results=None)
    p = plan(make_rollout(health={"checks": [{"type": "container", "container": "x"}]}, **ALL),
             [device("d1", version="1.0.6")],
             {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0)]}, None, T0 + 300)
    rb = next(a for a in p.actions if isinstance(a, SendRollback))
    assert (rb.record.action, rb.record.to_version, rb.record.from_version) == (
        "rollback", "1.0.5", "1.0.6")
    assert rb.command.action == "rollback"


def test_container_check() -> None:
    r = make_rollout(health={"checks": [{"type": "container", "container": "app",
                                         "image": "acme/app:{version}"}]}, **ALL)
    ok = dataclasses.replace(device("d1", version="1.0.6"),
                             containers=(Container("app", "acme/app:1.0.6"),))
    bad = dataclasses.replace(ok, containers=(Container("app", "acme/app:1.0.6", False),))
    records = {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0)]}
    assert kinds(plan(r, [ok], records, None, T0 + 300).actions) == ["Decide:healthy:None"]
    assert kinds(plan(r, [bad], records, None, T0 + 300).actions)[0] == \
        "Decide:unhealthy:CheckFailed"


def test_http_check_results_are_an_input() -> None:
    r = make_rollout(health={"checks": [{"type": "http", "url": "http://{device_ip}/"}]}, **ALL)
    records = {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0)]}
    d = [device("d1", version="1.0.6")]
    assert kinds(plan(r, d, records, None, T0 + 300).actions) == []  # waits for a result
    assert kinds(plan(r, d, records, None, T0 + 300,
                      check_results={(r.name, "d1"): True}).actions) == ["Decide:healthy:None"]
    assert kinds(plan(r, d, records, None, T0 + 10,
                      check_results={(r.name, "d1"): False}).actions)[0] == \
        "Decide:unhealthy:CheckFailed"


def test_new_version_cancels_open_updates_and_restarts_at_first_step() -> None:
    old = make_rollout(**ALL)
    first = plan(old, [device("d1")], {}, None, T0)
    state = first.state
    new = make_rollout(version="1.0.7", **ALL)
    p = plan(new, [device("d1")], {"d1": [rec()]}, state, T0 + 10)
    assert kinds(p.actions) == ["SendCancel", "Decide:cancel:Superseded"]
    assert {e.reason for e in p.events} >= {"Superseded", "RestartedAtFirstStep"}
    assert p.state.generation == state.generation + 1
    assert p.state.current_step == 0


def test_plan_deleted_cancels_only_unstarted_updates() -> None:
    records = {"d1": [rec()], "d2": [dataclasses.replace(rec(UpdateState.IN_PROGRESS),
                                                         device="d2", id="x")]}
    p = plan_deleted("agent-1-0-6", records, T0)
    assert kinds(p.actions) == ["SendCancel", "Decide:cancel:RolloutDeleted", "ClearCommand"]
    assert isinstance(p.actions[0], SendCancel) and p.actions[0].command.action == "cancel"


def test_state_json_round_trip() -> None:
    r = make_rollout(**ALL)
    p = plan(r, [device("d1")], {}, None, T0)
    assert RolloutState.from_json(p.state.to_json()) == p.state
    import json
    assert RolloutState.from_json(json.dumps(p.state.to_json())) == p.state


def test_next_wake_is_the_earliest_clock_change() -> None:
    r = make_rollout(**ALL)
    p = plan(r, [device("d1")], {"d1": [rec()]}, None, T0 + 60)
    assert p.next_wake == T0 + 150  # re-publish at ackTimeout/4 before the ack timeout
    kinds_ = plan(r, [device("d1", version="1.0.6")],
                  {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0)]}, None, T0 + 10)
    assert kinds_.next_wake == T0 + 300


def test_decisions_are_accepted_by_the_state_machine() -> None:
    from fleetwave.updates.transitions import apply_decision
    r = make_rollout(**ALL)
    record = rec()
    p = plan(r, [device("d1")], {"d1": [record]}, None, T0 + 601)
    d = next(a for a in p.actions if isinstance(a, Decide))
    t = apply_decision(record, d.decision)
    assert t.record is not None and t.record.state == UpdateState.TIMEOUT
    assert d.decision.kind == DecisionKind.TIMEOUT


def test_user_rollback_of_one_device() -> None:
    from fleetwave.planner.plan import apply_control
    r = make_rollout(**ALL)
    records = {"d1": [rec(UpdateState.SUCCEEDED, completed_at=T0, health=Health.HEALTHY)]}
    state = plan(r, [device("d1", version="1.0.6")], records, None, T0 + 400).state
    state, events = apply_control(state, "rollback", T0 + 500, device="d1")
    assert events[0].reason == "DeviceRollbackRequested"
    p = plan(r, [device("d1", version="1.0.6")], records, state, T0 + 600)
    assert kinds(p.actions) == ["SendRollback"]
    assert p.status.phase == "Completed"


def test_health_waits_for_a_state_report_that_lags_behind_the_success_status() -> None:
    """`update_succeeded` and the new retained state are separate messages: a device whose
    last state predates its success is not judged on that stale state, until
    offlineAfterUpdate; a state received after the success is judged at once."""
    rollout = make_rollout(**ALL)
    success = rec(UpdateState.SUCCEEDED, completed_at=T0)
    stale = dataclasses.replace(device("d1", version="1.0.5"), state_received_at=T0 - 1)
    waiting = plan(rollout, [stale], {"d1": [success]}, None, T0 + 300)
    assert kinds(waiting.actions) == []
    assert waiting.next_wake is not None and waiting.next_wake <= T0 + 600
    late = plan(rollout, [stale], {"d1": [success]}, None, T0 + 601)
    assert "Decide:unhealthy:VersionMismatch" in kinds(late.actions)
    fresh = dataclasses.replace(device("d1", version="1.0.5"), state_received_at=T0 + 1)
    judged = plan(rollout, [fresh], {"d1": [success]}, None, T0 + 300)
    assert "Decide:unhealthy:VersionMismatch" in kinds(judged.actions)


def test_an_api_rollout_with_a_scheduled_time_puts_it_in_the_command() -> None:
    """Ad-hoc updates may name a time (the predecessor's `scheduled_time`): the record
    and the command carry it, so the device updates then, not on receipt."""
    rollout = dataclasses.replace(
        make_rollout(source="api", **ALL),
        annotations={"fleetwave.io/scheduled-time": "2026-12-01T02:00:00Z"})
    result = plan(rollout, [device("d1")], {}, None, T0)
    [send] = [a for a in result.actions if isinstance(a, SendUpdate)]
    assert send.record.scheduled_time == "2026-12-01T02:00:00Z"
    assert send.command.scheduled_time == "2026-12-01T02:00:00Z"
    plain = plan(make_rollout(**ALL), [device("d1")], {}, None, T0)
    [send] = [a for a in plain.actions if isinstance(a, SendUpdate)]
    assert send.command.scheduled_time is None
