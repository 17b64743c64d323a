"""Whole rollouts driven in simulated time over a pure fake fleet, and the safety
properties that must hold on every pass (hypothesis)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import DEVICE_COMMANDS, SendUpdate
from fleetwave.planner.plan import apply_control, plan
from fleetwave.planner.waves import step_size
from tests.planner.fleet import T0, FakeFleet, always, device, fleet, make_rollout

STEPS = {"steps": [{"percent": 5}, {"percent": 25}, {"percent": 50}, {"percent": 100}],
         "maxInFlight": 50}


def failing(share: float):  # type: ignore[no-untyped-def]
    """A deterministic 'share' of devices always fails."""
    def behaviour(uuid: str, record: object) -> str:
        return "fail" if int(uuid[1:]) % 100 < share * 100 else "succeed"
    return behaviour


def test_rollout_completes_with_every_device_on_the_new_version() -> None:
    r = make_rollout(strategy=STEPS)
    f = FakeFleet([r], fleet(400))
    f.run(T0, T0 + 4 * 3600, tick=60)
    p = f.log[-1]
    assert p.status.phase == "Completed"
    assert {f.version_of(u) for u in f.devices} == {"1.0.6"}
    assert p.status.progress == "400/400"
    reasons = [e.reason for plan_ in f.log for e in plan_.events]
    assert reasons.count("StepStarted") == 4 and reasons.count("StepFinished") == 4


def test_thirty_percent_failures_pause_in_the_canary_with_others_untouched() -> None:
    r = make_rollout(strategy=STEPS, failurePolicy={"maxFailurePercent": 10, "minSample": 5,
                                                    "retries": 0})
    f = FakeFleet([r], fleet(400), failing(0.3))
    f.run(T0, T0 + 3600, tick=60)
    p = f.log[-1]
    assert p.status.phase == "Paused"
    assert {c.type: c for c in p.status.conditions}["Paused"].reason == "FailureBudgetExceeded"
    assert p.state.current_step == 0
    assert len(f.updated(r.name)) == step_size(5, 400)


def test_failure_action_rollback_puts_canary_back_and_holds() -> None:
    r = make_rollout(strategy=STEPS, failurePolicy={"maxFailurePercent": 10, "minSample": 5,
                                                    "retries": 0, "action": "rollback"})
    f = FakeFleet([r], fleet(400), failing(0.3))
    f.run(T0, T0 + 3600, tick=60)
    p = f.log[-1]
    assert p.status.phase == "RolledBack"
    canary = f.updated(r.name)
    assert len(canary) == step_size(5, 400)
    assert {f.version_of(u) for u in canary} == {"1.0.5"}
    assert all(action == "rollback" for t, _, action in f.sent if t > T0 + 1800)
    # Held: nothing new until the spec changes, then a new version restarts.
    f.rollouts = [make_rollout(strategy=STEPS, version="1.0.7")]
    f.behaviour = always("succeed")
    f.run(T0 + 3600, T0 + 9 * 3600, tick=60)
    assert f.log[-1].status.phase == "Completed"


def test_abort_stops_new_commands_open_updates_finish() -> None:
    r = make_rollout(strategy=STEPS)
    f = FakeFleet([r], fleet(200), always("silent"))
    f.step(T0)
    sent = len(f.sent)
    f.states[r.name], _ = apply_control(f.states[r.name], "abort", T0 + 1)
    f.run(T0 + 60, T0 + 3600, tick=60)
    assert len(f.sent) == sent
    assert f.log[-1].status.phase == "Aborted"


def test_manual_approval_waits_for_promote() -> None:
    r = make_rollout(strategy={**STEPS, "manualApproval": True})
    f = FakeFleet([r], fleet(100))
    f.run(T0, T0 + 1800, tick=60)
    p = f.log[-1]
    assert (p.status.phase, p.state.current_step) == ("Paused", 0)
    assert {c.type: c for c in p.status.conditions}["Paused"].reason == "AwaitingApproval"
    f.states[r.name], _ = apply_control(f.states[r.name], "promote", T0 + 1800)
    f.run(T0 + 1800, T0 + 1900, tick=60)
    assert f.log[-1].state.current_step == 1


def test_step_pause_then_next_step() -> None:
    r = make_rollout(strategy={"steps": [{"percent": 10, "pause": "30m"}, {"percent": 100}],
                               "maxInFlight": 100})
    f = FakeFleet([r], fleet(50))
    f.run(T0, T0 + 600, tick=60)  # canary done after stableFor (5m)
    p = f.log[-1]
    assert p.status.phase == "Paused" and p.next_wake is not None
    f.run(T0 + 600, T0 + 3 * 3600, tick=60)
    assert f.log[-1].status.phase == "Completed"


def test_unreachable_devices_do_not_hold_the_step_and_are_retried_later() -> None:
    r = make_rollout(strategy={"steps": [{"percent": 50}, {"percent": 100}],
                               "maxInFlight": 100})
    devices = fleet(20)
    f = FakeFleet([r], devices)
    for d in devices[:4]:
        f.set_online(d.uuid, False)
    f.run(T0, T0 + 3 * 3600, tick=60)
    p = f.log[-1]
    assert p.status.phase == "Completed"
    assert p.status.counts["unreachable"] >= 1
    assert p.status.failure_rate == 0
    for d in devices[:4]:
        f.set_online(d.uuid, True)
    f.run(T0 + 3 * 3600, T0 + 4 * 3600, tick=60)
    assert {f.version_of(u) for u in f.devices} == {"1.0.6"}


def test_device_appearing_later_is_updated_without_a_new_generation() -> None:
    r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 100})
    f = FakeFleet([r], fleet(5))
    f.run(T0, T0 + 1800, tick=60)
    f.devices["late"] = device("late")
    f.run(T0 + 1800, T0 + 2400, tick=60)
    assert f.version_of("late") == "1.0.6"
    assert f.log[-1].state.generation == 1


class TestIssue10:
    def test_penalty_box_parks_and_promote_device_releases(self) -> None:
        r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 100},
                         failurePolicy={"retries": 1, "maxFailurePercent": 100,
                                        "rollbackFailedDevices": False})
        f = FakeFleet([r], [device("d00001")], always("fail"))
        f.run(T0, T0 + 3600, tick=30)
        assert len(f.sent) == 2  # retries + 1, then parked
        p = f.log[-1]
        assert p.status.counts["parked"] == 1 and "d00001" in p.state.parked
        assert p.status.failure_rate == 100.0
        assert sum(e.reason == "DeviceParked" for pl in f.log for e in pl.events) == 1
        f.states[r.name], _ = apply_control(f.states[r.name], "promote", T0 + 3600,
                                            device="d00001")
        f.run(T0 + 3600, T0 + 3700, tick=30)
        assert len(f.sent) == 4  # released: a fresh retries + 1 attempts

    def test_max_per_minute_paces_commands(self) -> None:
        r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 10_000,
                                   "maxPerMinute": 120})
        f = FakeFleet([r], fleet(1000), always("silent"))
        now = T0
        while now < T0 + 300:
            fp = f.step(now)
            now = fp.next_wake if fp.next_wake is not None else now + 1
        for start in range(0, 240, 10):
            window = [t for t, _, _ in f.sent if T0 + start <= t < T0 + start + 60]
            assert len(window) <= 120 * 1.05 + 1
        assert len([t for t, _, _ in f.sent if t < T0 + 240]) >= 120 * 4 * 0.9

    def test_freeze_blocks_new_commands(self) -> None:
        start = datetime.fromtimestamp(T0, UTC).isoformat()
        end = datetime.fromtimestamp(T0 + 3600, UTC).isoformat()
        r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 10,
                                   "freezes": [{"start": start, "end": end}]})
        p = plan(r, fleet(3), {}, None, T0 + 10)
        assert (p.actions, p.status.phase, p.next_wake) == ((), "Waiting", T0 + 3600)
        assert len(plan(r, fleet(3), {}, None, T0 + 3600).actions) == 3

    def test_device_timezone_windows(self) -> None:
        # 2026-09-21 00:30 UTC: 02:30 in Berlin, 20:30 in New York.
        now = datetime(2026, 9, 21, 0, 30, tzinfo=UTC).timestamp()
        r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 10,
                                   "window": {"cron": "0 2 * * *", "duration": "2h",
                                              "timezone": "device",
                                              "fallbackTimezone": "Asia/Tokyo"}})
        devs = [device("berlin", timezone="Europe/Berlin"),
                device("ny", timezone="America/New_York"), device("nolabel"),
                device("bogus", timezone="Not/AZone")]
        p = plan(r, devs, {}, None, now)
        sent = {a.record.device for a in p.actions if isinstance(a, SendUpdate)}
        assert sent == {"berlin"}  # Tokyo fallback: 09:30, closed
        assert p.next_wake is not None and p.next_wake > now

    def test_resume_after_failure_pause_counts_only_new_failures(self) -> None:
        r = make_rollout(strategy=STEPS, failurePolicy={"maxFailurePercent": 10,
                                                        "minSample": 5, "retries": 0})
        f = FakeFleet([r], fleet(400), failing(0.3))
        f.run(T0, T0 + 3600, tick=60)
        assert f.log[-1].status.phase == "Paused"
        f.states[r.name], _ = apply_control(f.states[r.name], "resume", T0 + 3600)
        f.behaviour = always("succeed")
        f.run(T0 + 3600, T0 + 3700, tick=60)
        assert f.log[-1].status.phase == "Progressing"


@pytest.mark.parametrize(("zone", "local_open", "local_closed"), [
    pytest.param("Europe/Berlin", datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
                 datetime(2026, 3, 29, 0, 30, tzinfo=UTC), id="berlin-spring-forward"),
    pytest.param("Europe/Berlin", datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
                 datetime(2026, 10, 25, 4, 30, tzinfo=UTC), id="berlin-fall-back"),
    pytest.param("America/New_York", datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
                 datetime(2026, 3, 8, 6, 30, tzinfo=UTC), id="new-york-spring-forward"),
    pytest.param("America/New_York", datetime(2026, 11, 1, 7, 30, tzinfo=UTC),
                 datetime(2026, 11, 1, 10, 30, tzinfo=UTC), id="new-york-fall-back"),
    pytest.param("Asia/Kolkata", datetime(2026, 6, 1, 20, 45, tzinfo=UTC),
                 datetime(2026, 6, 1, 23, 45, tzinfo=UTC), id="kolkata-half-hour-zone"),
])
def test_window_is_respected_across_dst(zone: str, local_open: datetime,
                                        local_closed: datetime) -> None:
    """Window 02:00 + 3h local: open inside, no command outside, on DST change days."""
    r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 10,
                               "window": {"cron": "0 2 * * *", "duration": "3h",
                                          "timezone": zone}})
    opened = plan(r, fleet(2), {}, None, local_open.timestamp())
    closed = plan(r, fleet(2), {}, None, local_closed.timestamp())
    assert len(opened.actions) == 2 and opened.status.phase == "Progressing"
    assert closed.actions == () and closed.status.phase == "Waiting"
    assert closed.next_wake is not None and closed.next_wake > local_closed.timestamp()


# -- properties ---------------------------------------------------------------------------

outcomes = st.sampled_from(["succeed", "fail", "silent"])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), max_in_flight=st.integers(1, 10),
       behaviour=st.lists(outcomes, min_size=1, max_size=5),
       excluded=st.sets(st.integers(0, 59), max_size=10), offline=st.sets(st.integers(0, 59)),
       ticks=st.integers(5, 40), paused_at=st.one_of(st.none(), st.integers(0, 40)),
       op=st.sampled_from(["pause", "abort"]))
def test_safety_properties(n: int, max_in_flight: int, behaviour: list[str],
                           excluded: set[int], offline: set[int], ticks: int,
                           paused_at: int | None, op: str) -> None:
    """Never more than maxInFlight open, never a command to an excluded or non-matching
    device, and no new update command after pause or abort."""
    names = [f"d{i:05d}" for i in range(n)]
    r = make_rollout(strategy={"steps": [{"percent": 20}, {"percent": 100}],
                               "maxInFlight": max_in_flight},
                     exclude={"devices": [names[i] for i in excluded if i < n]},
                     failurePolicy={"maxFailurePercent": 100, "retryBackoff": "30s"})
    devices = [*fleet(n), dataclasses.replace(device("other"), labels={"device_type": "x"})]
    f = FakeFleet([r], devices, lambda u, rec: behaviour[int(u[1:]) % len(behaviour)]
                  if u != "other" else "succeed")
    for i in offline:
        if i < n:
            f.set_online(names[i], False)
    forbidden = {names[i] for i in excluded if i < n} | {"other"}
    now = T0
    stopped = False
    for tick in range(ticks):
        if paused_at is not None and tick == paused_at and r.name in f.states:
            f.states[r.name], _ = apply_control(f.states[r.name], op, now)  # type: ignore[arg-type]
            stopped = True
        fp = f.step(now)
        p = fp.plans[r.name]
        for a in p.actions:
            if isinstance(a, DEVICE_COMMANDS):
                assert a.record.device not in forbidden
            if stopped:
                assert not isinstance(a, SendUpdate)
        open_now = sum(1 for recs in f.records[r.name].values() for x in recs if x.is_open)
        assert open_now <= max_in_flight
        now += 45
