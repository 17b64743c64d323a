"""`health.confirmAfterRestart` in the planner: commands carry the flag, a device whose
success waits for its restart is in flight (it holds its step and a maxInFlight slot), a
state under a new boot id releases it, and no restart within updateTimeout is a failure
with reason NoRestart."""

from __future__ import annotations

from fleetwave.planner.model import Decide, SendUpdate
from fleetwave.updates.model import DecisionKind, Reason, UpdateState
from fleetwave.updates.transitions import confirm_by_state
from tests.planner.fleet import T0, FakeFleet, fleet, make_rollout

ROLLOUT = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 2},
                       health={"confirmAfterRestart": True})


def started() -> FakeFleet:
    f = FakeFleet([ROLLOUT], fleet(4))
    f.boot_ids = {u: f"{u}-boot-1" for u in f.devices}
    return f


def records(f: FakeFleet) -> list:  # type: ignore[type-arg]
    return [r for recs in f.records[ROLLOUT.name].values() for r in recs]


def test_the_command_asks_for_it_and_success_waits_in_flight() -> None:
    f = started()
    first = f.step(T0).plans[ROLLOUT.name]
    sends = [a for a in first.actions if isinstance(a, SendUpdate)]
    assert len(sends) == 2
    assert all(a.command.confirm_after_restart and a.record.confirm_after_restart
               for a in sends)
    assert all(a.command.to_body()["confirm_after_restart"] is True for a in sends)
    for t in range(1, 10):  # success reported, no restart yet: nobody else starts
        p = f.step(T0 + 30 * t).plans[ROLLOUT.name]
        assert not [a for a in p.actions if isinstance(a, SendUpdate)]
    assert p.status.counts["awaiting_restart"] == 2
    assert p.status.phase == "Progressing" and p.status.done == 0
    assert {r.state for r in records(f)} == {UpdateState.AWAITING_RESTART}
    assert all(r.boot_id == f"{r.device}-boot-1" for r in records(f))


def test_a_state_after_a_restart_frees_the_slot() -> None:
    f = started()
    f.step(T0)
    f.step(T0 + 30)
    for r in records(f):
        after = confirm_by_state(r, {"agent": "1.0.6"}, T0 + 40, f"{r.device}-boot-2").record
        assert after is not None
        f._put(after)
    p = f.step(T0 + 60).plans[ROLLOUT.name]
    assert p.status.counts["awaiting_restart"] == 0
    assert len([a for a in p.actions if isinstance(a, SendUpdate)]) == 2


def test_no_restart_within_update_timeout_fails_with_no_restart() -> None:
    f = started()
    f.step(T0)
    f.step(T0 + 30)
    p = f.step(T0 + 15 * 60 + 1).plans[ROLLOUT.name]  # updateTimeout 15m from the start
    timeouts = [a for a in p.actions
                if isinstance(a, Decide) and a.decision.kind is DecisionKind.TIMEOUT]
    assert len(timeouts) == 2
    assert {a.decision.reason for a in timeouts} == {Reason.NO_RESTART}
    assert all("no state on 1.0.6 after a restart" in (a.decision.message or "")
               for a in timeouts)
    assert p.status.counts["timeout"] == 2
    timed_out = {a.record_id for a in timeouts}
    assert {(r.state, r.reason) for r in records(f) if r.id in timed_out} == {
        (UpdateState.TIMEOUT, Reason.NO_RESTART)}


def test_a_device_without_boot_id_is_told_why() -> None:
    f = FakeFleet([ROLLOUT], fleet(1))  # acknowledges without a boot id
    f.step(T0)
    f.step(T0 + 30)
    p = f.step(T0 + 15 * 60 + 1).plans[ROLLOUT.name]
    [timeout] = [a for a in p.actions if isinstance(a, Decide)
                 and a.decision.kind is DecisionKind.TIMEOUT]
    assert timeout.decision.reason == Reason.NO_RESTART
    assert "reports no boot_id" in (timeout.decision.message or "")


def test_a_via_installed_but_not_restarted_is_not_superseded() -> None:
    """With `requires`, a device whose state already shows `via` (installed, not yet
    restarted) stays on its attempt to `via` instead of being moved on to the target."""
    rollout = make_rollout(version="3.0.0", health={"confirmAfterRestart": True},
                           strategy={"steps": [{"percent": 100}], "maxInFlight": 2,
                                     "requires": [{"below": "2.0.0", "via": "2.0.0"}]})
    f = FakeFleet([rollout], fleet(1))
    f.boot_ids = {"d00000": "boot-1"}
    f.step(T0)
    f.step(T0 + 30)  # succeeded, held; the fake device now reports 2.0.0
    assert f.version_of("d00000") == "2.0.0"
    p = f.step(T0 + 60).plans[rollout.name]
    [record] = [r for recs in f.records[rollout.name].values() for r in recs]
    assert (record.to_version, record.state) == ("2.0.0", UpdateState.AWAITING_RESTART)
    assert p.status.counts["awaiting_restart"] == 1 and p.status.counts["cancelled"] == 0
