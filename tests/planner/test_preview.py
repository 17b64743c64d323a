"""`fleetwave plan`'s computation (planner/preview.py) against the planner itself.

A preview is only worth reading if the controller later does what it says, so wave
membership is checked against `plan_fleet` driven pass by pass over the same
1,000-device snapshot, and earliest-start times against `plan` asked at the instants
around them: across both DST changes of 2026 in Europe/Berlin, per device time zone,
with freezes and with maxPerMinute pacing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import DeviceView, SendUpdate
from fleetwave.planner.plan import plan
from fleetwave.planner.preview import (
    FleetPreview,
    RolloutPreview,
    apply_inventory,
    preview,
    rfc3339,
)
from fleetwave.planner.waves import step_size
from fleetwave.resources.loading import parse_fleet
from fleetwave.resources.model import DeviceInventory, Rollout
from tests.planner.fleet import FakeFleet, make_rollout

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "fleet-snapshot.json"

ZONES = {"eu-central": "Europe/Berlin", "us-east": "America/New_York",
         "ap-south": "Asia/Kolkata", "global": "UTC"}
DEVICE_TYPES = ("rpi4", "rpi5", "jetson")


def snapshot_document(n: int = 1000, seed: int = 10) -> dict[str, Any]:
    """The fixture's content, as `fleetwave devices -o json` prints it.

    One device in 20 has no `timezone` label (it falls back to the rollout's zone) and
    one in 10 already runs agent 1.0.6, so both paths are covered.
    """
    rng = random.Random(seed)
    items = []
    for i in range(n):
        region = rng.choice(sorted(ZONES))
        labels = {"region": region, "device_type": rng.choice(DEVICE_TYPES),
                  "env": "staging" if rng.random() < 0.2 else "production"}
        if rng.random() >= 0.05:
            labels["timezone"] = ZONES[region]
        items.append({"uuid": f"dev-{i:04d}-{rng.getrandbits(32):08x}",
                      "versions": {"agent": "1.0.6" if rng.random() < 0.1 else "1.0.5"},
                      "labels": labels, "online": True})
    return {"items": items}


def snapshot() -> list[DeviceView]:
    return [DeviceView(uuid=d.uuid, versions=d.versions, labels=d.labels, online=True)
            for d in parse_fleet(json.loads(SNAPSHOT.read_text()))]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def only(result: FleetPreview) -> RolloutPreview:
    [r] = result.rollouts
    return r


def test_the_fixture_is_what_the_generator_writes() -> None:
    """The snapshot file is reproducible (regenerate with snapshot_document())."""
    assert json.loads(SNAPSHOT.read_text()) == snapshot_document()


# -- membership equals what the planner does -------------------------------------------


def _drive(rollouts: Sequence[Rollout], devices: Sequence[DeviceView], name: str,
           start: float) -> tuple[dict[int, set[str]], Any]:
    """plan_fleet pass by pass, every device succeeding at once: devices first sent per
    step (0-based), and the last plan of `name`."""
    fake = FakeFleet(list(rollouts), list(devices))
    per_step: dict[int, set[str]] = {}
    seen: set[str] = set()
    now = start
    for _ in range(400):
        fp = fake.step(now)
        p = fp.plans[name]
        for a in p.actions:
            if isinstance(a, SendUpdate) and a.record.device not in seen:
                seen.add(a.record.device)
                per_step.setdefault(p.state.current_step, set()).add(a.record.device)
        if p.status.phase == "Completed":
            return per_step, p
        now = fp.next_wake if fp.next_wake is not None and fp.next_wake > now else now + 60
    pytest.fail(f"{name} did not complete: {p.status}")


MEMBERSHIP_CASES = [
    pytest.param({"selector": {}, "strategy": {"steps": [{"percent": 5}, {"percent": 25},
                                                         {"percent": 50}, {"percent": 100}],
                                               "maxInFlight": 1000}},
                 id="whole-fleet-four-waves"),
    pytest.param({"selector": {"matchLabels": {"env": "production"}},
                  "strategy": {"steps": [{"percent": 10, "pause": "30m"}, {"percent": 100}],
                               "maxInFlight": 50}},
                 id="production-with-pause-and-max-in-flight"),
    pytest.param({"selector": {"matchExpressions": [
        {"key": "region", "operator": "In", "values": ["eu-central", "ap-south"]}]},
                  "exclude": "first-two",
                  "strategy": {"steps": [{"percent": 33}, {"percent": 66},
                                         {"percent": 100}], "maxInFlight": 1000,
                               "maxPerMinute": 600}},
                 id="two-regions-paced"),
]


@pytest.mark.parametrize("spec", MEMBERSHIP_CASES)
def test_wave_membership_is_what_plan_fleet_sends_step_by_step(spec: dict[str, Any]) -> None:
    devices = snapshot()
    if spec.get("exclude") == "first-two":
        spec = {**spec, "exclude": {"devices": [devices[0].uuid, devices[1].uuid]}}
    r = make_rollout("agent-1-0-6", health={"stableFor": "1m"}, **spec)
    # A second rollout of the same component on jetsons: they conflict, as in the engine.
    other = make_rollout("agent-jetson", version="1.0.7",
                         selector={"matchLabels": {"device_type": "jetson",
                                                   "region": "eu-central"}},
                         strategy={"steps": [{"percent": 100}]})
    start = utc(2026, 3, 28, 12)
    result = only(preview([r], devices, start, others=[other]))
    per_step, last = _drive([r, other], devices, r.name, start)

    assert {i: set(w.devices) for i, w in enumerate(result.waves) if w.devices} == per_step
    assert result.targeted == last.status.targeted
    assert len(result.conflicted) == last.status.counts["conflicted"] > 0
    assert result.conflicts_with == ("agent-jetson",)
    assert result.up_to_date == last.status.counts["upToDate"] > 0
    assert sum(len(w.devices) for w in result.waves) + result.up_to_date == result.targeted


def test_excluded_devices_are_listed_and_never_in_a_wave() -> None:
    devices = snapshot()
    excluded = [devices[0].uuid, devices[1].uuid]
    r = make_rollout(selector={}, exclude={"devices": excluded})
    result = only(preview([r], devices, utc(2026, 3, 28, 12)))
    assert result.excluded == tuple(sorted(excluded))
    assert not set(excluded) & {u for w in result.waves for u in w.devices}


def test_an_api_rollout_takes_its_device_instead_of_conflicting() -> None:
    devices = snapshot()
    adhoc = make_rollout("adhoc", source="api", version="1.0.9",
                         selector={"devices": [devices[5].uuid]})
    r = make_rollout(selector={})
    result = only(preview([r], devices, utc(2026, 3, 28, 12), others=[adhoc]))
    assert result.overridden == (devices[5].uuid,) and result.conflicted == ()
    assert result.targeted == len(devices) - 1


def test_counts_per_label_value_add_up_to_the_wave() -> None:
    r = make_rollout(selector={})
    result = only(preview([r], snapshot(), utc(2026, 3, 28, 12),
                          group_by=("region", "device_type", "timezone")))
    for w in result.waves:
        for label in ("region", "device_type", "timezone"):
            assert sum(w.by_label[label].values()) == len(w.devices)
    assert "(none)" in result.waves[-1].by_label["timezone"]


def test_inventory_files_among_the_paths_win_over_reported_labels() -> None:
    devices = snapshot()
    inv = DeviceInventory("pins", {devices[0].uuid: {"region": "moon"}})
    merged = apply_inventory(devices, [inv])
    assert merged[0].labels["region"] == "moon" and merged[1:] == devices[1:]


# -- earliest start across DST, per device zone, freezes, pacing ---------------------------


def _window(zone: str, **strategy: Any) -> Rollout:
    return make_rollout(selector={}, strategy={
        "steps": [{"percent": 100}], "maxInFlight": 10_000,
        "window": {"cron": "0 2 * * *", "duration": "3h", "timezone": zone,
                   "fallbackTimezone": "UTC"}, **strategy})


def _sends_at(r: Rollout, devices: Sequence[DeviceView], t: float) -> set[str]:
    """What the planner commands at `t` on a fresh rollout (pacing left to other tests)."""
    p = plan(r, devices, {}, None, t)
    return {a.record.device for a in p.actions if isinstance(a, SendUpdate)}


@pytest.mark.parametrize(("now", "opens"), [
    pytest.param(utc(2026, 3, 28, 12), utc(2026, 3, 29, 1), id="spring-forward-0200-is-0300"),
    pytest.param(utc(2026, 10, 24, 12), utc(2026, 10, 25, 0), id="fall-back-first-0200-only"),
])
def test_a_berlin_0200_window_across_dst_starts_when_the_planner_first_sends(
        now: float, opens: float) -> None:
    """02:00 does not exist on 29 March (cron runs at 03:00 CEST = 01:00Z) and exists
    twice on 25 October (cron runs once, at the first, 02:00 CEST = 00:00Z)."""
    devices = snapshot()[:50]
    r = _window("Europe/Berlin")
    result = only(preview([r], devices, now))
    wave = result.waves[0]
    assert (result.starts_at, wave.first_send, wave.sending_done) == (opens, opens, opens)
    assert _sends_at(r, devices, opens - 1) == set()
    assert _sends_at(r, devices, opens) == set(wave.devices)


@pytest.mark.parametrize(("now", "opening"), [
    pytest.param(utc(2026, 3, 28, 12),
                 {"Asia/Kolkata": utc(2026, 3, 28, 20, 30), "Europe/Berlin": utc(2026, 3, 29, 1),
                  "UTC": utc(2026, 3, 29, 2), "America/New_York": utc(2026, 3, 29, 6)},
                 id="berlin-spring-forward"),
    pytest.param(utc(2026, 10, 24, 12),
                 {"Asia/Kolkata": utc(2026, 10, 24, 20, 30),
                  "Europe/Berlin": utc(2026, 10, 25, 0), "UTC": utc(2026, 10, 25, 2),
                  "America/New_York": utc(2026, 10, 25, 6)},
                 id="berlin-fall-back"),
])
def test_device_time_zones_each_open_at_their_own_0200_across_dst(
        now: float, opening: dict[str, float]) -> None:
    """Each zone's devices start at 02:00 local; the wave's earliest start is the first
    zone, its half-sent time is when most of its zones are under way."""
    devices = snapshot()
    r = _window("device")
    result = only(preview([r], devices, now))
    wave = result.waves[0]
    by_uuid = {d.uuid: d for d in devices}
    assert result.starts_at == now  # the rollout starts; its devices wait
    assert wave.first_send == opening["Asia/Kolkata"]
    assert wave.sending_done == opening["America/New_York"]
    assert wave.half_sent in opening.values()
    for zone, at in opening.items():
        expected = {u for u in wave.devices
                    if by_uuid[u].labels.get("timezone", "UTC") == zone}
        assert expected <= _sends_at(r, devices, at), zone
        assert not expected & _sends_at(r, devices, at - 60), zone


def test_a_freeze_over_the_opening_pushes_the_start_to_its_end() -> None:
    r = _window("Europe/Berlin", freezes=[{"start": "2026-03-29T00:00:00Z",
                                           "end": "2026-03-29T01:30:00Z"}])
    devices = snapshot()[:20]
    result = only(preview([r], devices, utc(2026, 3, 28, 12)))
    assert result.waves[0].first_send == utc(2026, 3, 29, 1, 30)
    assert _sends_at(r, devices, utc(2026, 3, 29, 1, 29)) == set()
    assert _sends_at(r, devices, utc(2026, 3, 29, 1, 30)) == set(result.waves[0].devices)


def test_a_freeze_over_the_whole_window_moves_the_start_to_the_next_night() -> None:
    r = _window("Europe/Berlin", freezes=[{"start": "2026-03-29T00:00:00Z",
                                           "end": "2026-03-29T12:00:00Z", "reason": "audit"}])
    result = only(preview([r], snapshot()[:20], utc(2026, 3, 28, 12)))
    assert result.waves[0].first_send == utc(2026, 3, 30, 0)  # 02:00 CEST


def test_not_before_and_a_step_pause_delay_the_next_wave() -> None:
    r = make_rollout(selector={}, strategy={
        "steps": [{"percent": 10, "pause": "2h"}, {"percent": 100}], "maxInFlight": 10_000,
        "notBefore": "2026-04-01T08:00:00Z"})
    result = only(preview([r], snapshot(), utc(2026, 3, 28, 12)))
    first, second = result.waves
    assert result.starts_at == first.first_send == first.sending_done == utc(2026, 4, 1, 8)
    assert second.ready_at == second.first_send == utc(2026, 4, 1, 10)


def test_max_per_minute_stretches_sending_as_the_token_bucket_allows() -> None:
    """600 commands at 120 a minute: a full bucket of 6 at once, then one every 0.5 s."""
    devices = [replace(d, versions={"agent": "1.0.5"}) for d in snapshot()[:600]]
    r = make_rollout(selector={}, strategy={"steps": [{"percent": 100}],
                                            "maxInFlight": 10_000, "maxPerMinute": 120})
    start = utc(2026, 3, 28, 12)
    wave = only(preview([r], devices, start)).waves[0]
    assert wave.first_send == start
    assert wave.sending_done == pytest.approx(start + 594 * 0.5)
    # The planner, woken when it asks to be, never finishes sending before that.
    fake = FakeFleet([r], devices, lambda uuid, rec: "silent")
    now = start
    while len(fake.sent) < 600 and now < start + 900:
        fp = fake.step(now)
        now = fp.next_wake if fp.next_wake is not None and fp.next_wake > now else now + 1
    last = max(t for t, _, _ in fake.sent)
    assert len(fake.sent) == 600 and wave.sending_done is not None
    assert wave.sending_done <= last <= wave.sending_done + 3.5  # batches of <= 3 s of tokens


def test_an_unknown_fallback_zone_is_an_error_like_the_planner_says() -> None:
    r = make_rollout(selector={}, strategy={
        "steps": [{"percent": 100}],
        "window": {"cron": "0 2 * * *", "duration": "1h", "timezone": "device",
                   "fallbackTimezone": "Mars/Olympus"}})
    result = only(preview([r], snapshot()[:5], utc(2026, 3, 28, 12)))
    assert result.error is not None and "Mars/Olympus" in result.error
    assert plan(r, snapshot()[:5], {}, None, utc(2026, 3, 28, 12)).status.phase == "Failed"


# -- determinism -----------------------------------------------------------------------------


def test_same_input_same_output_byte_for_byte_whatever_the_device_order() -> None:
    devices = snapshot()
    r = _window("device", maxPerMinute=300)
    first = json.dumps(preview([r], devices, utc(2026, 10, 24, 12)).to_dict())
    again = json.dumps(preview([r], devices, utc(2026, 10, 24, 12)).to_dict())
    shuffled = list(devices)
    random.Random(3).shuffle(shuffled)
    other_order = json.dumps(preview([r], shuffled, utc(2026, 10, 24, 12)).to_dict())
    assert first == again == other_order
    assert json.loads(first)["now"] == rfc3339(utc(2026, 10, 24, 12)) == "2026-10-24T12:00:00Z"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300),
       percents=st.lists(st.integers(1, 100), min_size=1, max_size=5).map(sorted),
       at_version=st.sets(st.integers(0, 299), max_size=30))
def test_waves_partition_the_targeted_devices_in_step_sizes(
        n: int, percents: list[int], at_version: set[int]) -> None:
    devices = [DeviceView(f"u{i}", {"agent": "1.0.6" if i in at_version else "1.0.5"})
               for i in range(n)]
    r = make_rollout(selector={}, strategy={"steps": [{"percent": p} for p in percents]})
    result = only(preview([r], devices, utc(2026, 3, 28, 12)))
    members = 0
    for w in result.waves:
        members += len(w.devices) + w.up_to_date
        assert members == max(step_size(q, n) for q in percents[: w.step])
        assert w.step == 1 or w.ready_at is not None
    assert members + result.unassigned == result.targeted == n


def _downloads_at(r: Rollout, devices: Sequence[DeviceView], t: float) -> set[str]:
    p = plan(r, devices, {}, None, t)
    return {a.record.device for a in p.actions
            if isinstance(a, SendUpdate) and a.record.action == "download"}


@pytest.mark.parametrize(("zone", "download_from"), [
    pytest.param("Europe/Berlin", utc(2026, 3, 28, 23), id="rollout-wide"),  # 00:00 CET
    pytest.param("device", utc(2026, 3, 28, 18, 30), id="per-device-kolkata-first"),
])
def test_download_from_is_when_the_planner_first_sends_a_download(
        zone: str, download_from: float) -> None:
    """Download window 00:00-02:00 local before an install window at 02:00 local."""
    r = _window(zone, download={"window": {"cron": "0 0 * * *", "duration": "2h",
                                           "timezone": zone, "fallbackTimezone": "UTC"}})
    devices = snapshot()[:200]
    fleet_preview = preview([r], devices, utc(2026, 3, 28, 12))
    result = only(fleet_preview)
    wave = result.waves[0]
    assert wave.download_from == download_from
    assert wave.first_send is not None and download_from < wave.first_send
    assert _downloads_at(r, devices, download_from - 60) == set()
    assert _downloads_at(r, devices, download_from)
    assert fleet_preview.to_dict()["rollouts"][0]["waves"][0]["downloadFrom"] == rfc3339(
        download_from)
    assert any("download" in n for n in result.notes)


def test_without_a_download_window_before_the_install_there_is_no_download_from() -> None:
    r = _window("UTC", download={"window": {"cron": "0 3 * * *", "duration": "1h"}})
    wave = only(preview([r], snapshot()[:50], utc(2026, 3, 28, 12))).waves[0]
    assert wave.download_from is None
