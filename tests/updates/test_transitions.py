"""The per-device update state machine: every status and decision, from every state."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from fleetwave.protocol.messages import Status, StatusType
from fleetwave.updates.model import (
    RANK,
    TERMINAL_STATES,
    Decision,
    DecisionKind,
    Health,
    Reason,
    UpdateRecord,
    UpdateState,
)
from fleetwave.updates.transitions import (
    STATE_TIMESTAMP,
    Ignored,
    apply_decision,
    apply_status,
    pick_legacy_record,
)

S = UpdateState
T = StatusType


def record(state: UpdateState = S.PENDING, **changes: object) -> UpdateRecord:
    base = UpdateRecord(id="u1", device="dev-a", rollout="r1", component="agent",
                        to_version="1.0.6", state=state, attempt=1, correlation_id="c1",
                        created_at=100.0, updated_at=100.0, from_version="1.0.5")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def status(type_: StatusType, at: float = 200.0, device: str = "dev-a",
           correlation_id: str | None = "c1", **fields: object) -> Status:
    return Status(device=device, type=type_, correlation_id=correlation_id, received_at=at,
                  **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "type_", "expected"), [
    pytest.param(S.PENDING, T.COMMAND_RECEIVED, S.ACKNOWLEDGED, id="received-acknowledges"),
    pytest.param(S.PENDING, T.SCHEDULED, S.SCHEDULED, id="scheduled-without-received"),
    pytest.param(S.ACKNOWLEDGED, T.SCHEDULED, S.SCHEDULED, id="acknowledged-to-scheduled"),
    pytest.param(S.PENDING, T.STARTED, S.IN_PROGRESS, id="started-without-received"),
    pytest.param(S.SCHEDULED, T.STARTED, S.IN_PROGRESS, id="scheduled-to-started"),
    pytest.param(S.ACKNOWLEDGED, T.PROGRESS, S.IN_PROGRESS, id="progress-implies-started"),
    pytest.param(S.IN_PROGRESS, T.SUCCEEDED, S.SUCCEEDED, id="succeeded"),
    pytest.param(S.PENDING, T.SUCCEEDED, S.SUCCEEDED, id="succeeded-straight-from-pending"),
    pytest.param(S.IN_PROGRESS, T.FAILED, S.FAILED, id="failed"),
    pytest.param(S.SCHEDULED, T.CANCELLED, S.CANCELLED, id="cancelled"),
    pytest.param(S.FAILED, T.ROLLBACK_SUCCEEDED, S.ROLLED_BACK, id="failed-then-rolled-back"),
    pytest.param(S.SUCCEEDED, T.ROLLBACK_SUCCEEDED, S.ROLLED_BACK, id="succeeded-rolled-back"),
    pytest.param(S.TIMEOUT, T.ROLLBACK_SUCCEEDED, S.ROLLED_BACK, id="timeout-rolled-back"),
])
def test_status_moves_record_forward(start: UpdateState, type_: StatusType,
                                     expected: UpdateState) -> None:
    before = record(start)
    result = apply_status(before, status(type_))
    assert result.ignored is None
    assert result.record is not None
    assert result.record.state == expected
    assert result.record.updated_at == 200.0
    stamp = STATE_TIMESTAMP[expected]
    assert getattr(result.record, stamp) == 200.0


@pytest.mark.parametrize(("start", "type_", "reason"), [
    pytest.param(S.ACKNOWLEDGED, T.COMMAND_RECEIVED, Ignored.DUPLICATE, id="duplicate-received"),
    pytest.param(S.IN_PROGRESS, T.STARTED, Ignored.DUPLICATE, id="duplicate-started"),
    pytest.param(S.SUCCEEDED, T.SUCCEEDED, Ignored.DUPLICATE, id="duplicate-success"),
    pytest.param(S.IN_PROGRESS, T.COMMAND_RECEIVED, Ignored.BACKWARDS, id="late-received"),
    pytest.param(S.SCHEDULED, T.COMMAND_RECEIVED, Ignored.BACKWARDS, id="late-received-2"),
    pytest.param(S.SUCCEEDED, T.STARTED, Ignored.TERMINAL, id="late-started"),
    pytest.param(S.SUCCEEDED, T.PROGRESS, Ignored.TERMINAL, id="late-progress"),
    pytest.param(S.SUCCEEDED, T.FAILED, Ignored.TERMINAL, id="terminal-stays"),
    pytest.param(S.FAILED, T.SUCCEEDED, Ignored.TERMINAL, id="failed-stays-failed"),
    pytest.param(S.TIMEOUT, T.COMMAND_RECEIVED, Ignored.TERMINAL, id="ack-after-timeout"),
    pytest.param(S.CANCELLED, T.STARTED, Ignored.TERMINAL, id="start-after-cancel"),
    pytest.param(S.ROLLED_BACK, T.ROLLBACK_SUCCEEDED, Ignored.DUPLICATE, id="dup-rollback"),
    pytest.param(S.ROLLED_BACK, T.SUCCEEDED, Ignored.TERMINAL, id="success-after-rollback"),
])
def test_duplicate_late_and_terminal_statuses_are_no_ops(start: UpdateState, type_: StatusType,
                                                         reason: str) -> None:
    result = apply_status(record(start), status(type_))
    assert result == type(result)(None, reason)
    assert not result.changed


def test_status_from_another_device_is_refused() -> None:
    result = apply_status(record(S.PENDING), status(T.SUCCEEDED, device="dev-b"))
    assert (result.record, result.ignored) == (None, Ignored.WRONG_DEVICE)


def test_state_timestamps_are_set_once_and_skipped_states_stay_unset() -> None:
    started = apply_status(record(), status(T.STARTED, at=150.0)).record
    assert started is not None
    assert (started.acknowledged_at, started.scheduled_at, started.started_at) == (None, None,
                                                                                   150.0)
    done = apply_status(started, status(T.SUCCEEDED, at=160.0)).record
    assert done is not None
    assert (done.started_at, done.completed_at) == (150.0, 160.0)
    rolled = apply_status(done, status(T.ROLLBACK_SUCCEEDED, at=170.0)).record
    assert rolled is not None
    assert (rolled.completed_at, rolled.rolled_back_at) == (160.0, 170.0)


@pytest.mark.parametrize(("held", "percent", "expected"), [
    pytest.param(None, 10, 10, id="first-progress"),
    pytest.param(10, 40, 40, id="grows"),
    pytest.param(40, 10, None, id="never-shrinks"),
    pytest.param(40, 40, None, id="same-is-duplicate"),
    pytest.param(90, 250, 100, id="clamped-to-100"),
    pytest.param(None, -5, 0, id="clamped-to-0"),
])
def test_progress_only_grows(held: int | None, percent: int, expected: int | None) -> None:
    result = apply_status(record(S.IN_PROGRESS, progress=held),
                          status(T.PROGRESS, percent=percent))
    if expected is None:
        assert result.ignored == Ignored.STALE_PROGRESS
    else:
        assert result.record is not None
        assert result.record.progress == expected


def test_started_fills_a_missing_from_version_only() -> None:
    filled = apply_status(record(from_version=None), status(T.STARTED, current_version="1.0.4"))
    kept = apply_status(record(), status(T.STARTED, current_version="0.9"))
    assert filled.record is not None and filled.record.from_version == "1.0.4"
    assert kept.record is not None and kept.record.from_version == "1.0.5"


def test_failure_keeps_the_devices_reason_error_and_exit_code() -> None:
    result = apply_status(record(S.IN_PROGRESS), status(
        T.FAILED, reason="script_execution_failed", error="Update script not found",
        exit_code=127))
    assert result.record is not None
    assert (result.record.state, result.record.reason, result.record.error,
            result.record.exit_code) == (S.FAILED, "script_execution_failed",
                                         "Update script not found", 127)
    bare = apply_status(record(S.IN_PROGRESS), status(T.FAILED)).record
    assert bare is not None and bare.reason == Reason.DEVICE_REPORTED_FAILURE


def test_rollback_failed_fails_a_rollback_record() -> None:
    rollback = record(S.IN_PROGRESS, action="rollback")
    result = apply_status(rollback, status(T.ROLLBACK_FAILED, error="backup missing"))
    assert result.record is not None
    assert (result.record.state, result.record.error) == (S.FAILED, "backup missing")


def test_rollback_failed_on_a_failed_update_notes_the_error_once() -> None:
    failed = record(S.FAILED, error="script failed")
    once = apply_status(failed, status(T.ROLLBACK_FAILED, error="backup missing")).record
    assert once is not None
    assert once.state == S.FAILED
    assert once.error == "script failed; rollback failed: backup missing"
    again = apply_status(once, status(T.ROLLBACK_FAILED, error="backup missing"))
    assert again.ignored == Ignored.DUPLICATE
    open_update = apply_status(record(S.IN_PROGRESS), status(T.ROLLBACK_FAILED))
    assert open_update.ignored == Ignored.NOT_A_ROLLBACK


@pytest.mark.parametrize(("start", "kind", "expected", "reason"), [
    pytest.param(S.PENDING, DecisionKind.TIMEOUT, S.TIMEOUT, Reason.ACK_TIMEOUT, id="ack-timeout"),
    pytest.param(S.IN_PROGRESS, DecisionKind.TIMEOUT, S.TIMEOUT, Reason.UPDATE_TIMEOUT,
                 id="update-timeout"),
    pytest.param(S.SCHEDULED, DecisionKind.CANCEL, S.CANCELLED, Reason.CANCELLED_BY_USER,
                 id="cancel"),
    pytest.param(S.FAILED, DecisionKind.ROLLED_BACK, S.ROLLED_BACK, None, id="rolled-back"),
])
def test_decisions_move_records(start: UpdateState, kind: DecisionKind, expected: UpdateState,
                                reason: str | None) -> None:
    result = apply_decision(record(start), Decision(kind, at=300.0))
    assert result.record is not None
    assert (result.record.state, result.record.reason) == (expected, reason)
    assert getattr(result.record, STATE_TIMESTAMP[expected]) == 300.0


@pytest.mark.parametrize(("start", "kind", "reason"), [
    pytest.param(S.SUCCEEDED, DecisionKind.TIMEOUT, Ignored.TERMINAL, id="no-timeout-after-end"),
    pytest.param(S.FAILED, DecisionKind.CANCEL, Ignored.TERMINAL, id="no-cancel-after-end"),
    pytest.param(S.IN_PROGRESS, DecisionKind.ROLLED_BACK, Ignored.OPEN, id="rollback-needs-end"),
    pytest.param(S.ROLLED_BACK, DecisionKind.ROLLED_BACK, Ignored.DUPLICATE, id="dup-rollback"),
    pytest.param(S.FAILED, DecisionKind.HEALTHY, Ignored.NOT_SUCCEEDED, id="health-needs-success"),
    pytest.param(S.SUCCEEDED, DecisionKind.SENT, Ignored.TERMINAL, id="no-send-after-end"),
])
def test_refused_decisions(start: UpdateState, kind: DecisionKind, reason: str) -> None:
    assert apply_decision(record(start), Decision(kind, at=300.0)).ignored == reason


def test_sent_records_the_latest_publish_and_ignores_older_ones() -> None:
    first = apply_decision(record(), Decision(DecisionKind.SENT, at=110.0)).record
    assert first is not None and first.sent_at == 110.0 and first.state == S.PENDING
    second = apply_decision(first, Decision(DecisionKind.SENT, at=130.0)).record
    assert second is not None and second.sent_at == 130.0
    assert apply_decision(second, Decision(DecisionKind.SENT, at=120.0)).ignored == \
        Ignored.DUPLICATE


def test_health_goes_unknown_to_healthy_to_unhealthy_but_never_back() -> None:
    done = record(S.SUCCEEDED)
    healthy = apply_decision(done, Decision(DecisionKind.HEALTHY, at=400.0)).record
    assert healthy is not None and (healthy.health, healthy.health_at) == (Health.HEALTHY, 400.0)
    sick = apply_decision(healthy, Decision(DecisionKind.UNHEALTHY, at=500.0,
                                            reason=Reason.OFFLINE_AFTER_UPDATE)).record
    assert sick is not None
    assert (sick.health, sick.reason, sick.state) == (Health.UNHEALTHY,
                                                      Reason.OFFLINE_AFTER_UPDATE, S.SUCCEEDED)
    assert apply_decision(sick, Decision(DecisionKind.HEALTHY, at=600.0)).ignored == \
        Ignored.DUPLICATE


ALL_STATUS_TYPES = list(StatusType)


@pytest.mark.parametrize("start", list(UpdateState))
def test_no_status_ever_lowers_the_rank_or_leaves_a_terminal_state(start: UpdateState) -> None:
    """Exhaustive over every state and every ordered pair of status types."""
    for first, second in itertools.product(ALL_STATUS_TYPES, repeat=2):
        current = record(start, action="update")
        for step, type_ in enumerate((first, second)):
            result = apply_status(current, status(type_, at=200.0 + step, percent=50))
            if result.record is None:
                continue
            after = result.record
            assert RANK[after.state] >= RANK[current.state], (start, first, second)
            if current.state in TERMINAL_STATES and after.state != current.state:
                assert after.state == S.ROLLED_BACK
            current = after


def test_legacy_status_attaches_to_the_one_open_update() -> None:
    open_one = record(S.ACKNOWLEDGED)
    closed = record(S.SUCCEEDED, id="u0", correlation_id="c0", created_at=50.0)
    picked = pick_legacy_record(status(T.STARTED, correlation_id=None), [closed, open_one])
    assert picked.record == open_one


@pytest.mark.parametrize(("records", "status_fields", "component", "expected"), [
    pytest.param([], {}, None, Ignored.NO_OPEN_UPDATE, id="nothing-open"),
    pytest.param([record(S.SUCCEEDED)], {}, None, Ignored.NO_OPEN_UPDATE, id="only-closed"),
    pytest.param([record(), record(id="u2", component="app", to_version="3.0")], {}, None,
                 Ignored.AMBIGUOUS, id="two-open-no-version"),
    pytest.param([record(), record(id="u2", component="app", to_version="3.0")],
                 {"target_version": "3.0"}, None, "u2", id="version-disambiguates"),
    pytest.param([record(), record(id="u2", component="app", to_version="3.0")], {}, "agent",
                 "u1", id="component-disambiguates"),
    pytest.param([record(device="dev-b")], {}, None, Ignored.NO_OPEN_UPDATE,
                 id="other-devices-records-never-match"),
])
def test_legacy_status_matching(records: list[UpdateRecord], status_fields: dict[str, str],
                                component: str | None, expected: str) -> None:
    picked = pick_legacy_record(status(T.STARTED, correlation_id=None, **status_fields),
                                records, component)
    assert (picked.record.id if picked.record else picked.ignored) == expected


def test_legacy_rollback_status_attaches_to_the_newest_ended_update() -> None:
    older = record(S.SUCCEEDED, id="u0", correlation_id="c0", created_at=50.0)
    newest = record(S.FAILED)
    picked = pick_legacy_record(status(T.ROLLBACK_SUCCEEDED, correlation_id=None),
                                [newest, older])
    assert picked.record == newest


@pytest.mark.parametrize(("action", "type_", "expected"), [
    pytest.param("download", T.COMMAND_RECEIVED, S.ACKNOWLEDGED, id="download-received"),
    pytest.param("download", T.DOWNLOAD_SUCCEEDED, S.SUCCEEDED, id="download-succeeded"),
    pytest.param("download", T.DOWNLOAD_FAILED, S.FAILED, id="download-failed"),
    pytest.param("download", T.FAILED, S.FAILED, id="download-refused-as-update-failed"),
    pytest.param("download", T.CANCELLED, S.CANCELLED, id="download-cancelled"),
    pytest.param("download", T.SUCCEEDED, None, id="download-ignores-update-succeeded"),
    pytest.param("download", T.STARTED, None, id="download-ignores-started"),
    pytest.param("download", T.ROLLBACK_SUCCEEDED, None, id="download-ignores-rollback"),
    pytest.param("update", T.DOWNLOAD_SUCCEEDED, None, id="update-ignores-download"),
    pytest.param("rollback", T.DOWNLOAD_FAILED, None, id="rollback-ignores-download"),
])
def test_download_statuses_apply_to_download_records_only(
        action: str, type_: StatusType, expected: UpdateState | None) -> None:
    t = apply_status(record(action=action), status(type_, reason="checksum"))
    if expected is None:
        assert t.record is None and t.ignored == Ignored.WRONG_OPERATION
    else:
        assert t.record is not None and t.record.state == expected
        if expected == S.FAILED:
            assert t.record.reason == "checksum"


def test_a_legacy_status_never_lands_on_the_other_kind_of_record() -> None:
    download = record(action="download", id="d1", correlation_id="cd")
    update = record(id="u2", correlation_id="cu", created_at=150.0)
    picked = pick_legacy_record(status(T.SUCCEEDED, correlation_id=None), [download, update])
    assert picked.record is not None and picked.record.id == "u2"
    picked = pick_legacy_record(status(T.DOWNLOAD_SUCCEEDED, correlation_id=None),
                                [download, update])
    assert picked.record is not None and picked.record.id == "d1"
