"""What every planned command carries for the device's admission rules (DESIGN.md 9.1):
its device, the attempt's release, an expiry one ackTimeout ahead, and `downgrade` only
where the Rollout itself declares a lower version than the device runs."""

from __future__ import annotations

import dataclasses

import pytest

from fleetwave.planner.model import Republish, SendCancel, SendRollback, SendUpdate
from fleetwave.planner.plan import plan, plan_deleted
from fleetwave.protocol.admission import format_time
from fleetwave.updates.commands import CANCEL_LIFETIME, command_for
from fleetwave.updates.model import UpdateState, next_release
from tests.planner.fleet import T0, device, make_rollout
from tests.planner.test_device_updates import ALL, rec

ACK = 600.0  # make_rollout's ackTimeout: 10m


def test_a_new_update_carries_device_release_and_expiry() -> None:
    (action,) = plan(make_rollout(**ALL), [device("d1")], {}, None, T0).actions
    assert isinstance(action, SendUpdate)
    assert action.record.release == next_release(T0)
    assert (action.command.device, action.command.release, action.command.expires_at) == (
        "d1", action.record.release, format_time(T0 + ACK))
    assert action.command.downgrade is False


def test_a_republish_keeps_the_release_and_moves_the_expiry() -> None:
    pending = rec(release=123, sent_at=T0)
    (action,) = plan(make_rollout(**ALL), [device("d1")], {"d1": [pending]}, None,
                     T0 + 200).actions
    assert isinstance(action, Republish)
    assert action.command.release == 123
    assert action.command.expires_at == format_time(T0 + 200 + ACK)


def test_a_rollback_is_a_new_attempt_with_a_higher_release() -> None:
    done = rec(UpdateState.SUCCEEDED, completed_at=T0, release=next_release(T0))
    p = plan(make_rollout(health={"checks": [{"type": "container", "container": "x"}]}, **ALL),
             [device("d1", version="1.0.6")], {"d1": [done]}, None, T0 + 300)
    rb = next(a for a in p.actions if isinstance(a, SendRollback))
    assert rb.record.release > done.release
    assert (rb.command.action, rb.command.release, rb.command.downgrade) == (
        "rollback", rb.record.release, False)


@pytest.mark.parametrize(("running", "target", "downgrade"), [
    pytest.param("1.0.5", "1.0.6", False, id="upgrade"),
    pytest.param("2.0.0", "1.0.6", True, id="rollout-declares-a-lower-version"),
    pytest.param("1.0.6-rc.1", "1.0.6", False, id="release-after-its-candidate"),
    pytest.param("1.0.6", "1.0.6-rc.1", True, id="back-to-a-candidate"),
])
def test_downgrade_is_marked_only_when_the_rollout_declares_the_lower_version(
        running: str, target: str, downgrade: bool) -> None:
    (action,) = plan(make_rollout(version=target, **ALL), [device("d1", version=running)],
                     {}, None, T0).actions
    assert isinstance(action, SendUpdate)
    assert action.command.downgrade is downgrade


def test_cancels_carry_the_attempt_release() -> None:
    pending = rec(release=77)
    (action,) = plan(make_rollout(version="1.0.7", **ALL), [device("d1")], {"d1": [pending]},
                     None, T0 + 10).actions[:1]
    assert isinstance(action, SendCancel)
    assert (action.command.action, action.command.release) == ("cancel", 77)
    deleted = plan_deleted("agent-1-0-6", {"d1": [pending]}, T0)
    cancel = deleted.actions[0]
    assert isinstance(cancel, SendCancel)
    assert (cancel.command.release, cancel.command.expires_at) == (
        77, format_time(T0 + CANCEL_LIFETIME))


def test_only_an_update_carries_the_artifact() -> None:
    rollout = make_rollout(artifact={"url": "https://a/x.tgz", "sha256": "a" * 64}, **ALL)
    artifact = rollout.spec.artifact
    record = dataclasses.replace(rec(), release=5)
    update = command_for(record, "update", T0, ACK, artifact=artifact)
    assert (update.artifact_url, update.artifact_sha256) == ("https://a/x.tgz", "a" * 64)
    for action in ("cancel", "rollback"):
        other = command_for(record, action, T0, ACK, artifact=artifact)  # type: ignore[arg-type]
        assert (other.artifact_url, other.artifact_sha256, other.downgrade) == (None, None, False)


@pytest.mark.parametrize(("created", "highest", "expected"), [
    pytest.param(1000.0, None, 1_000_000, id="first-attempt-is-its-millisecond"),
    pytest.param(1000.0, 999_999, 1_000_000, id="later-clock-wins"),
    pytest.param(1000.0, 1_000_000, 1_000_001, id="same-millisecond"),
    pytest.param(1000.0, 5_000_000, 5_000_001, id="clock-stepped-back"),
])
def test_next_release(created: float, highest: int | None, expected: int) -> None:
    assert next_release(created, highest) == expected
