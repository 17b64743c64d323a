"""Per-site budgets (`strategy.budgets`): at most N devices updating at once per label value,
alongside maxInFlight, on every pass (tables, then a hypothesis property)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import Decide, DeviceView, SendRollback, SendUpdate
from fleetwave.resources.loading import load_text
from tests.planner.fleet import T0, FakeFleet, always, device, make_rollout

ONE_STEP = [{"percent": 100}]


def regional(counts: dict[str, int]) -> list[DeviceView]:
    return [device(f"{region}{i:04d}", region=region)
            for region, n in counts.items() for i in range(n)]


def in_flight(f: FakeFleet, label: str, closed: frozenset[str] = frozenset()
              ) -> Counter[str | None]:
    """Open attempts per label value, read from the records (not from the planner), but
    those in `closed` (decided in the plan under test: a timeout ends an attempt)."""
    out: Counter[str | None] = Counter()
    for by_device in f.records.values():
        for uuid, recs in by_device.items():
            if any(r.is_open and r.id not in closed for r in recs):
                out[f.devices[uuid].labels.get(label)] += 1
    return out


@pytest.mark.parametrize(("fleet_by_region", "budget", "max_in_flight", "expect"), [
    pytest.param({"eu": 10, "us": 10}, 3, 1000, {"eu": 3, "us": 3}, id="each-region-its-n"),
    pytest.param({"eu": 2, "us": 10}, 3, 1000, {"eu": 2, "us": 3}, id="small-region-whole"),
    pytest.param({"eu": 10, "us": 10}, 3, 4, None, id="max-in-flight-still-holds"),
    pytest.param({"eu": 10, "": 0}, 5, 1000, {"eu": 5}, id="one-region"),
])
def test_first_pass_sends_at_most_the_budget_per_region(
        fleet_by_region: dict[str, int], budget: int, max_in_flight: int,
        expect: dict[str, int] | None) -> None:
    r = make_rollout(strategy={"steps": ONE_STEP, "maxInFlight": max_in_flight,
                               "budgets": [{"groupBy": "region", "maxInFlight": budget}]})
    f = FakeFleet([r], regional({k: v for k, v in fleet_by_region.items() if v}),
                  always("silent"))
    f.step(T0)
    sent = Counter(f.devices[u].labels["region"] for _, u, _ in f.sent)
    if expect is None:
        assert sum(sent.values()) == max_in_flight
        assert max(sent.values()) <= budget
    else:
        assert dict(sent) == expect


def test_devices_without_the_label_share_one_budget_of_their_own() -> None:
    r = make_rollout(strategy={"steps": ONE_STEP,
                               "budgets": [{"groupBy": "region", "maxInFlight": 2}]})
    devices = [*regional({"eu": 5}), *(device(f"x{i}") for i in range(5))]
    f = FakeFleet([r], devices, always("silent"))
    f.step(T0)
    assert in_flight(f, "region") == Counter({"eu": 2, None: 2})


def test_two_budgets_on_two_labels_both_hold() -> None:
    r = make_rollout(strategy={"steps": ONE_STEP, "budgets": [
        {"groupBy": "region", "maxInFlight": 3}, {"groupBy": "site", "maxInFlight": 1}]})
    devices = [device(f"{reg}{s}{i}", region=reg, site=f"{reg}-{s}")
               for reg in ("eu", "us") for s in "abcd" for i in range(3)]
    f = FakeFleet([r], devices, always("silent"))
    f.step(T0)
    assert max(in_flight(f, "site").values()) == 1
    assert in_flight(f, "region") == Counter({"eu": 3, "us": 3})


def test_a_full_site_waits_while_others_go_ahead_and_the_rollout_completes() -> None:
    r = make_rollout(strategy={"steps": [{"percent": 50}, {"percent": 100}],
                               "budgets": [{"groupBy": "region", "maxInFlight": 2}]})
    f = FakeFleet([r], regional({"eu": 12, "us": 3, "ap": 7}))
    f.run(T0, T0 + 8 * 3600, tick=60)
    assert f.log[-1].status.phase == "Completed"
    assert {f.version_of(u) for u in f.devices} == {"1.0.6"}


def test_an_update_finishing_frees_its_sites_slot() -> None:
    r = make_rollout(strategy={"steps": ONE_STEP,
                               "budgets": [{"groupBy": "region", "maxInFlight": 1}]})
    f = FakeFleet([r], regional({"eu": 3}), always("silent"))
    f.step(T0)
    assert len(f.sent) == 1
    f.step(T0 + 60)
    assert len(f.sent) == 1  # still open: the site is full
    f.behaviour = always("succeed")
    f.play(T0 + 61)
    f.step(T0 + 120)
    assert len(f.sent) == 2


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=4),
       budget=st.integers(1, 4), max_in_flight=st.integers(1, 20),
       outcomes=st.lists(st.sampled_from(["succeed", "fail", "silent"]), min_size=1,
                         max_size=7),
       ticks=st.integers(1, 12))
def test_never_more_than_the_budget_in_flight_within_a_label_value(
        sizes: list[int], budget: int, max_in_flight: int, outcomes: list[str],
        ticks: int) -> None:
    devices = regional({f"r{i}": n for i, n in enumerate(sizes) if n})
    if not devices:
        return
    r = make_rollout(strategy={"steps": [{"percent": 30}, {"percent": 100}],
                               "maxInFlight": max_in_flight,
                               "budgets": [{"groupBy": "region", "maxInFlight": budget}]},
                     failurePolicy={"maxFailurePercent": 100, "retries": 2,
                                    "retryBackoff": "1m"})
    f = FakeFleet([r], devices,
                  lambda uuid, rec: outcomes[(int(uuid[2:]) + rec.attempt) % len(outcomes)])
    now = T0
    for _ in range(ticks):
        fp = f.plan(now)
        actions = fp.plans[r.name].actions
        sends = [a for a in actions if isinstance(a, SendUpdate | SendRollback)]
        closed = frozenset(a.record_id for a in actions if isinstance(a, Decide))
        before = in_flight(f, "region", closed)
        after = before + Counter(f.devices[a.record.device].labels.get("region")
                                 for a in sends)
        assert max(after.values(), default=0) <= budget
        assert sum(after.values()) <= max_in_flight
        f.step(now)
        now += 7 * 60


@pytest.mark.parametrize(("fragment", "field", "says"), [
    pytest.param("  strategy: {budgets: [{groupBy: '', maxInFlight: 2}]}\n",
                 "spec.strategy.budgets[0].groupBy", "must not be empty", id="empty-label"),
    pytest.param("  strategy: {budgets: [{groupBy: region, maxInFlight: 0}]}\n",
                 "spec.strategy.budgets[0].maxInFlight", "below the minimum of 1",
                 id="zero"),
    pytest.param("  strategy: {budgets: [{groupBy: region, maxInFlight: 2},\n"
                 "                        {groupBy: region, maxInFlight: 3}]}\n",
                 "spec.strategy.budgets[1].groupBy", "already limits 'region'",
                 id="same-label-twice"),
])
def test_validate_refuses_a_wrong_budget_by_file_line_and_field(
        fragment: str, field: str, says: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '1.0.6'\n  selector: {}\n" + fragment)
    errors = load_text(text, "r.yaml").errors
    assert {e.field for e in errors} == {field}
    error = next(e for e in errors if says in e.message)
    assert error.file == "r.yaml" and error.line is not None and error.line >= 8
