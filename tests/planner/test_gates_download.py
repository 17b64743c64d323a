"""strategy.download: fetch inside the download window, install only inside `window`.

Table tests pin who gets `action: download` and when, and what happens when the install
window opens; a hypothesis property drives a fake fleet through random windows, zones,
fleets and device behaviours and checks every command against the windows themselves.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.planner.classify import Outcome
from fleetwave.planner.model import SendUpdate
from fleetwave.planner.schedule import window_state
from fleetwave.resources.model import Rollout, Window
from fleetwave.resources.vocabulary import Phase
from fleetwave.updates.model import UpdateRecord
from tests.planner.fleet import T0, FakeFleet, always, fleet, make_rollout

MIDNIGHT = datetime(2026, 9, 22, tzinfo=UTC).timestamp()
"""The first UTC midnight after T0: the download window opens then, for 2 hours."""
INSTALL = MIDNIGHT + 2 * 3600
"""The install window opens at 02:00 UTC, for 4 hours."""

ARTIFACT = {"url": "https://example.com/agent-1.0.6.tar.gz", "sha256": "ab" * 32}


def rollout(download: dict[str, Any] | None = None, window: dict[str, Any] | None = None,
            **strategy: Any) -> Rollout:
    return make_rollout(artifact=ARTIFACT, strategy={
        "steps": [{"percent": 10}, {"percent": 50}, {"percent": 100}], "maxInFlight": 1000,
        "window": window or {"cron": "0 2 * * *", "duration": "4h"},
        "download": {"window": download or {"cron": "0 0 * * *", "duration": "2h"}},
        **strategy})


def sends(fake: FakeFleet, action: str | None = None) -> list[SendUpdate]:
    out = [a for p in fake.log[-1:] for a in p.actions if isinstance(a, SendUpdate)]
    return [a for a in out if action is None or a.record.action == action]


def records(fake: FakeFleet, action: str) -> list[UpdateRecord]:
    return [r for by in fake.records.values() for recs in by.values() for r in recs
            if r.action == action]


def test_nothing_is_sent_before_the_download_window() -> None:
    fake = FakeFleet([rollout()], fleet(100))
    fp = fake.step(MIDNIGHT - 3600)
    plan = fp.plans["agent-1-0-6"]
    assert plan.actions == ()
    assert plan.status.phase == Phase.WAITING
    assert plan.next_wake == MIDNIGHT  # the download window opening wakes the loop


def test_the_first_wave_downloads_inside_the_download_window_and_installs_nothing() -> None:
    fake = FakeFleet([rollout()], fleet(100))
    fake.step(MIDNIGHT + 60)
    got = sends(fake)
    assert got and {s.record.action for s in got} == {"download"}
    assert len(got) == 10  # the 10 % step: the current wave only
    for s in got:
        assert s.command.action == "download"
        assert s.command.artifact_url == ARTIFACT["url"]
        assert s.command.artifact_sha256 == ARTIFACT["sha256"]
        assert s.command.device == s.record.device and s.command.release == s.record.release
    plan = fake.log[-1]
    assert plan.status.phase == Phase.WAITING  # installs wait for their window
    fake.step(MIDNIGHT + 120)  # the devices answered (FakeFleet.play): nothing new
    assert sends(fake) == []
    assert fake.log[-1].status.counts["downloaded"] == 10
    assert fake.log[-1].next_wake == INSTALL


def test_downloaded_devices_install_at_once_when_the_install_window_opens() -> None:
    fake = FakeFleet([rollout()], fleet(100))
    fake.step(MIDNIGHT + 60)
    downloaded = {s.record.device: s.record for s in sends(fake)}
    fake.step(INSTALL - 1)
    assert sends(fake) == []
    fake.step(INSTALL)
    installs = sends(fake, "update")
    assert {s.record.device for s in installs} == set(downloaded)
    assert sends(fake, "download") == []
    for s in installs:
        assert s.record.release > downloaded[s.record.device].release  # a new attempt
        assert s.record.attempt == downloaded[s.record.device].attempt == 1
        assert s.record.id != downloaded[s.record.device].id


def test_a_device_that_missed_the_download_window_is_installed_anyway() -> None:
    wave = [s.record.device for s in _first_downloads()]
    fake = FakeFleet([rollout()], fleet(100), behaviour=lambda u, r: (
        "silent" if u == wave[0] else "succeed"))
    fake.step(MIDNIGHT + 60)
    fake.set_online(wave[0], False)
    fake.run(MIDNIGHT + 120, INSTALL, tick=600)  # its download times out unreachable
    [missed] = [r for r in records(fake, "download") if r.device == wave[0]]
    assert missed.state == "timeout"
    fake.set_online(wave[0], True)
    fake.step(INSTALL)
    assert wave[0] in {s.record.device for s in sends(fake, "update")}


def _first_downloads() -> list[SendUpdate]:
    fake = FakeFleet([rollout()], fleet(100))
    fake.step(MIDNIGHT + 60)
    return sends(fake, "download")


def test_open_downloads_are_bounded_by_max_in_flight() -> None:
    fake = FakeFleet([rollout(maxInFlight=3)], fleet(100), behaviour=always("silent"))
    fake.step(MIDNIGHT + 60)
    assert len(sends(fake, "download")) == 3
    fake.step(MIDNIGHT + 90)
    assert sends(fake, "download") == []  # three still open
    assert fake.log[-1].status.counts["downloading"] == 3


def test_a_failed_download_is_not_repeated_and_the_install_still_comes() -> None:
    fake = FakeFleet([rollout()], fleet(100), behaviour=lambda u, r: (
        "fail" if r.action == "download" else "succeed"))
    fake.step(MIDNIGHT + 60)
    failed = {r.device for r in records(fake, "download")}
    assert len(failed) == 10 and all(r.state == "failed" for r in records(fake, "download"))
    fake.step(MIDNIGHT + 600)
    assert sends(fake) == []
    fake.step(INSTALL + 1)
    assert {s.record.device for s in sends(fake, "update")} == failed
    plan = fake.log[-1]
    assert plan.status.failure_rate == 0.0  # a failed download is no failed update


def test_a_freeze_holds_downloads_too() -> None:
    freeze = {"start": datetime.fromtimestamp(MIDNIGHT - 60, UTC).isoformat(),
              "end": datetime.fromtimestamp(MIDNIGHT + 3600, UTC).isoformat()}
    fake = FakeFleet([rollout(freezes=[freeze])], fleet(100))
    fake.step(MIDNIGHT + 60)
    assert sends(fake) == []
    fake.step(MIDNIGHT + 3601)
    assert len(sends(fake, "download")) == 10


def test_where_both_windows_are_open_devices_install_instead() -> None:
    fake = FakeFleet([rollout(download={"cron": "0 1 * * *", "duration": "3h"})], fleet(100))
    fake.step(INSTALL + 60)
    assert sends(fake, "download") == []
    assert len(sends(fake, "update")) == 10


def test_per_device_windows_download_in_each_devices_own_night() -> None:
    local = {"cron": "0 0 * * *", "duration": "2h", "timezone": "device"}
    install = {"cron": "0 2 * * *", "duration": "4h", "timezone": "device"}
    devices = [*fleet(50, "b", timezone="Europe/Berlin"), *fleet(50, "n", timezone="UTC")]
    fake = FakeFleet([rollout(download=local, window=install,
                              steps=[{"percent": 100}])], devices)
    berlin_midnight = MIDNIGHT - 2 * 3600  # 00:00 CEST
    fake.step(berlin_midnight + 60)
    assert {s.record.device[0] for s in sends(fake)} == {"b"}
    assert {s.record.action for s in sends(fake)} == {"download"}
    fake.step(MIDNIGHT + 60)  # 02:00 in Berlin (install), 00:00 in UTC (download)
    by_action = {(s.record.device[0], s.record.action) for s in sends(fake)}
    assert by_action == {("b", "update"), ("n", "download")}


def test_a_download_of_a_device_no_longer_targeted_is_cancelled() -> None:
    fake = FakeFleet([rollout()], fleet(100), behaviour=always("silent"))
    fake.step(MIDNIGHT + 60)
    [first, *_] = sends(fake, "download")
    fake.devices.pop(first.record.device)
    fp = fake.step(MIDNIGHT + 120)
    cancelled = [a for a in fp.plans["agent-1-0-6"].actions
                 if getattr(a, "record", None) is not None and a.record.id == first.record.id]
    assert cancelled and cancelled[0].command.action == "cancel"


# -- the property: no install outside its window, no download outside its own ----------------

HOURS = st.integers(min_value=0, max_value=23)


def _open(window: Window, zone: str, t: float) -> bool:
    return window_state(window, zone, t)[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(download_hour=HOURS, install_hour=HOURS,
       download_hours=st.integers(min_value=1, max_value=6),
       install_hours=st.integers(min_value=1, max_value=6),
       per_device=st.booleans(), n=st.integers(min_value=1, max_value=40),
       max_in_flight=st.integers(min_value=1, max_value=10),
       fail=st.sets(st.integers(min_value=0, max_value=39), max_size=10),
       silent=st.sets(st.integers(min_value=0, max_value=39), max_size=5),
       start=st.integers(min_value=0, max_value=86_399))
def test_no_install_outside_its_window_and_no_download_outside_its_own(
        download_hour: int, install_hour: int, download_hours: int, install_hours: int,
        per_device: bool, n: int, max_in_flight: int, fail: set[int], silent: set[int],
        start: int) -> None:
    zone = "device" if per_device else "UTC"
    download = {"cron": f"0 {download_hour} * * *", "duration": f"{download_hours}h",
                "timezone": zone}
    install = {"cron": f"0 {install_hour} * * *", "duration": f"{install_hours}h",
               "timezone": zone}
    r = rollout(download=download, window=install, maxInFlight=max_in_flight,
                steps=[{"percent": 50}, {"percent": 100}],
                health={"ackTimeout": "10m", "updateTimeout": "15m", "stableFor": "1m"})
    zones = ["UTC", "Asia/Kolkata", "America/New_York"]
    devices = [dataclasses.replace(d, labels={**d.labels, "timezone": zones[i % 3]})
               for i, d in enumerate(fleet(n))]
    index = {d.uuid: i for i, d in enumerate(devices)}

    def behaviour(uuid: str, record: UpdateRecord) -> str:
        i = index[uuid]
        return "silent" if i in silent else "fail" if i in fail else "succeed"

    fake = FakeFleet([r], devices, behaviour=behaviour)
    t0 = T0 + start
    fake.run(t0, t0 + 2 * 86400, tick=1800)
    assert r.spec.strategy.window is not None and r.spec.strategy.download_window is not None
    labels = {d.uuid: d.labels["timezone"] for d in devices}
    for at, uuid, action in fake.sent:
        where = labels[uuid] if per_device else "UTC"
        if action == "update":
            assert _open(r.spec.strategy.window, where, at), (at, uuid)
        elif action == "download":
            assert _open(r.spec.strategy.download_window, where, at), (at, uuid)
            assert not _open(r.spec.strategy.window, where, at), (at, uuid)
    by_device: dict[str, list[str]] = {}
    for _, uuid, action in fake.sent:
        by_device.setdefault(uuid, []).append(action)
    for uuid, actions in by_device.items():
        assert actions.count("download") <= 1, (uuid, actions)  # one per generation


@pytest.mark.parametrize("outcome", [Outcome.DOWNLOADING, Outcome.DOWNLOADED])
def test_download_outcomes_hold_their_step_and_count_in_status(outcome: Outcome) -> None:
    from fleetwave.planner.classify import EFFECTS
    effect = EFFECTS[outcome]
    assert effect.holds_step and not effect.in_flight and not effect.failure
