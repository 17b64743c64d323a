"""`health.confirmAfterRestart`: a device's `update_succeeded` only moves the record to
`awaiting_restart`; it is settled `succeeded` by a state that shows the target version under
a boot id other than the one the device acknowledged under. In the pure rules and in the
store on both backends (where the open-update index must count the new open state)."""

from __future__ import annotations

import pytest

from fleetwave.protocol.messages import ReportedState, StatusType
from fleetwave.store import Store
from fleetwave.updates.model import OPEN_STATES, Reason, UpdateState
from fleetwave.updates.transitions import Ignored, apply_status, confirm_by_state
from tests.store.records import status, update

TARGET = {"agent": "1.0.6"}
S = UpdateState


def acknowledged(boot: str | None = "boot-1", **changes: object):  # type: ignore[no-untyped-def]
    record = update(confirm_after_restart=True, **changes)
    after = apply_status(record, status(StatusType.COMMAND_RECEIVED, record.correlation_id,
                                        at=150.0, boot_id=boot)).record
    assert after is not None and after.boot_id == boot
    return after


def test_success_status_is_held_until_a_restart() -> None:
    record = acknowledged()
    held = apply_status(record, status(StatusType.SUCCEEDED, record.correlation_id,
                                       at=200.0, version="1.0.6")).record
    assert held is not None
    assert (held.state, held.is_open, held.progress, held.completed_at) == (
        S.AWAITING_RESTART, True, 100, None)
    assert S.AWAITING_RESTART in OPEN_STATES
    # The same boot: an agent restarted without a reboot, or the state sent before it.
    same = confirm_by_state(held, TARGET, 210.0, "boot-1")
    assert not same.changed and same.ignored == Ignored.NOT_RESTARTED
    done = confirm_by_state(held, TARGET, 220.0, "boot-2").record
    assert done is not None
    assert (done.state, done.reason, done.completed_at) == (
        S.SUCCEEDED, Reason.CONFIRMED_AFTER_RESTART, 220.0)
    # A late duplicate of the success status cannot move it back.
    late = apply_status(done, status(StatusType.SUCCEEDED, done.correlation_id, at=230.0))
    assert not late.changed and late.ignored == Ignored.TERMINAL


@pytest.mark.parametrize(("boot_at_ack", "versions", "boot", "settled"), [
    pytest.param("boot-1", TARGET, "boot-2", True, id="new version, new boot"),
    pytest.param("boot-1", TARGET, "boot-1", False, id="new version, same boot"),
    pytest.param("boot-1", {"agent": "1.0.5"}, "boot-2", False, id="rebooted onto the old"),
    pytest.param("boot-1", TARGET, None, False, id="state without a boot id"),
    pytest.param(None, TARGET, "boot-2", False, id="acknowledged without a boot id"),
])
def test_only_a_state_under_a_new_boot_confirms(boot_at_ack: str | None,
                                                versions: dict[str, str], boot: str | None,
                                                settled: bool) -> None:
    record = acknowledged(boot_at_ack)
    assert confirm_by_state(record, versions, 300.0, boot).changed is settled


def test_the_boot_id_is_the_one_from_before_the_install() -> None:
    """Only statuses sent before the install name the boot a restart must change: a
    success reported after the reboot (its acknowledgement lost) sets nothing."""
    record = update(confirm_after_restart=True)
    started = apply_status(record, status(StatusType.STARTED, record.correlation_id,
                                          at=150.0, boot_id="boot-1")).record
    assert started is not None and started.boot_id == "boot-1"
    again = apply_status(started, status(StatusType.COMMAND_RECEIVED, record.correlation_id,
                                         at=160.0, boot_id="boot-2"))
    assert not again.changed
    lost_ack = update(confirm_after_restart=True)
    held = apply_status(lost_ack, status(StatusType.SUCCEEDED, lost_ack.correlation_id,
                                         at=200.0, boot_id="boot-2")).record
    assert held is not None and held.state == S.AWAITING_RESTART and held.boot_id is None


def test_without_the_flag_nothing_changes() -> None:
    record = update()
    done = apply_status(record, status(StatusType.SUCCEEDED, record.correlation_id,
                                       at=200.0)).record
    assert done is not None and done.state == S.SUCCEEDED
    assert confirm_by_state(update(), TARGET, 200.0, None).record is not None


async def test_the_store_holds_and_then_confirms(store: Store) -> None:
    record = update("u1", confirm_after_restart=True)
    await store.updates.create([record])
    cid = record.correlation_id
    await store.updates.apply_statuses([status(StatusType.COMMAND_RECEIVED, cid, at=150.0,
                                       boot_id="boot-1"),
                                status(StatusType.SUCCEEDED, cid, at=200.0)])
    [held] = await store.updates.of_rollout("r1")
    assert (held.state, held.boot_id, held.confirm_after_restart) == (
        S.AWAITING_RESTART, "boot-1", True)
    # Still open: the store skips a second open update of the device beside it.
    assert await store.updates.create([update("u2", created_at=210.0)]) == []
    assert await store.devices.apply_messages(
        [ReportedState("dev-a", TARGET, 220.0, boot_id="boot-1")]) == []
    [settled] = await store.devices.apply_messages(
        [ReportedState("dev-a", TARGET, 230.0, boot_id="boot-2")])
    assert (settled.state, settled.reason) == (S.SUCCEEDED, Reason.CONFIRMED_AFTER_RESTART)
    assert [r.state for r in await store.updates.of_rollout("r1")] == [S.SUCCEEDED]
