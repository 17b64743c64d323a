"""The ramp, per-region budgets and a mandatory intermediate version through one real
`fleetwave run`, Mosquitto and `fleetwave simulate`, at the same time.

Three rollouts of one component on disjoint parts of one simulated fleet (by the
simulator's `env` label), so the three-minute ramp and the others share a single run:
- production: `ramp` 20 → 40 → 80 commands a minute (×2 every minute, at most 80);
- staging: `budgets` of 2 devices in flight per region, beside a maxInFlight of 50;
- dev: `requires` below 1.0.6 via 1.0.6, to 1.0.7.
Everything is measured from the update records the controller stored (their creation
and completion times on its clock), never from the test's own clock: the test's clock
only decides when to read them.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fleetwave.mqtt.broker import free_port
from fleetwave.updates.model import UpdateRecord, UpdateState
from tests.support.broker import start_broker
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.records import stored_attempts
from tests.support.rollouts import rollout_yaml

pytestmark = pytest.mark.slow

DEVICES = 300
"""Seed 0 gives 167 production, 71 staging and 62 dev devices: more production devices
than the ramp's 140 commands of its first three minutes, so tokens, not devices, pace it."""
SEED = "0"
RAMP = (20, 40, 80)
"""Commands in each whole minute of the ramp: start 20, factor 2 every 1m, at most 80."""
BUDGET = 2
TOLERANCE = 0.05

ROLLOUTS = {
    "ramped": rollout_yaml("ramped", {
        "steps": [{"percent": 100}], "maxInFlight": 100,
        "ramp": {"startPerMinute": RAMP[0], "factor": 2, "every": "1m",
                 "maxPerMinute": RAMP[-1]}}, match_labels={"env": "production"}),
    "budgeted": rollout_yaml("budgeted", {
        "steps": [{"percent": 100}], "maxInFlight": 50,
        "budgets": [{"groupBy": "region", "maxInFlight": BUDGET}]},
        match_labels={"env": "staging"}),
    "via": rollout_yaml("via", {
        "steps": [{"percent": 100}], "maxInFlight": 20,
        "requires": [{"below": "1.0.6", "via": "1.0.6"}]},
        version="1.0.7", match_labels={"env": "dev"}),
}


@dataclass(frozen=True)
class Outcome:
    """What the run left, read once at its end."""

    records: dict[str, list[UpdateRecord]]
    """rollout -> every update record it stored."""
    devices: dict[str, dict[str, Any]]
    """uuid -> the device as GET /api/v1/devices shows it."""
    statuses: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    """GET /api/v1/devices/{uuid}/updates of one device of the `via` rollout."""


def load_records(store_url: str) -> dict[str, list[UpdateRecord]]:
    return {name: stored_attempts(store_url, name) for name in ROLLOUTS}


def status_of(controller: Controller, name: str) -> dict[str, Any]:
    rollout = controller.get(f"/api/v1/rollouts/{name}", ok_only=False)
    if not isinstance(rollout, dict) or "name" not in rollout:
        return {}
    status: dict[str, Any] = rollout["status"]
    return status


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """One run: the fleet reports in, the three rollouts start together, and the run is
    read three minutes (plus a margin) after the ramp's first command."""
    tmp = tmp_path_factory.mktemp("pacing")
    broker = start_broker(tmp / "mosquitto")
    source = tmp / "rollouts"
    source.mkdir()
    workdir = tmp / "controller"
    workdir.mkdir()
    simulator = Simulator(broker=broker, workdir=tmp, devices=DEVICES, key_dir=tmp,
                          args=("--speed", "2", "--seed", SEED))
    controller = Controller(workdir=workdir, broker=broker, port=free_port(), source=source,
                            store=f"sqlite:///{tmp / 'fleetwave.db'}", key_dir=tmp)
    try:
        simulator.start()
        controller.start()
        wait_until(lambda: len(controller.devices()) == DEVICES, 60, "fleet did not report in")
        for name, text in ROLLOUTS.items():
            (source / f"{name}.yaml").write_text(text)
        first = wait_until(lambda: load_records(controller.store)["ramped"], 60,
                           lambda: f"the ramp sent nothing\n{controller.tail()}")
        t0 = min(r.created_at for r in first)
        for name in ("budgeted", "via"):
            wait_until(lambda n=name: status_of(controller, n).get("phase") == "Completed",
                       170, lambda n=name: f"{n} did not complete: {status_of(controller, n)}"
                                           f"\n{controller.tail()}")
        wait_until(lambda: time.time() > t0 + 60 * len(RAMP) + 5, 200, "clock did not move")
        records = load_records(controller.store)
        devices = {d["uuid"]: d for d in controller.devices()}
        statuses = {name: status_of(controller, name) for name in ROLLOUTS}
        hopped = sorted({r.device for r in records["via"]})[0]
        history = controller.get(f"/api/v1/devices/{hopped}/updates")
        yield Outcome(records, devices, statuses,
                      history["items"] if isinstance(history, dict) else history)
    finally:
        controller.stop()
        simulator.stop()
        broker.stop()


def per_minute(records: list[UpdateRecord]) -> list[int]:
    """Commands in each whole minute from the first one, by the records' creation times."""
    t0 = min(r.created_at for r in records)
    counts = collections.Counter(int((r.created_at - t0) // 60) for r in records)
    return [counts[k] for k in range(len(RAMP))]


def test_the_ramp_keeps_its_schedule_minute_by_minute(outcome: Outcome) -> None:
    records = [r for r in outcome.records["ramped"] if r.action == "update"]
    minutes = per_minute(records)
    for got, wanted in zip(minutes, RAMP, strict=True):
        assert abs(got - wanted) <= TOLERANCE * wanted, (minutes, RAMP)
    assert all(r.sent_at is not None for r in records), "a command was stored, never sent"
    production = [u for u, d in outcome.devices.items() if d["labels"]["env"] == "production"]
    assert len(production) > sum(RAMP), "devices ran out: the ramp was not what paced it"
    assert outcome.statuses["ramped"]["counts"]["failed"] == 0


def in_flight_peaks(records: list[UpdateRecord], key: dict[str, str]) -> dict[str, int]:
    """Most records open at once per key value: each is open from its creation until the
    controller received its final status (completed_at); an end frees its slot before a
    start at the same instant, as the planner only sees a slot free after the status."""
    edges = []
    for r in records:
        assert r.completed_at is not None, r
        edges += [(r.created_at, 1, key[r.device]), (r.completed_at, -1, key[r.device])]
    open_now: collections.Counter[str] = collections.Counter()
    peaks: collections.Counter[str] = collections.Counter()
    for _, delta, value in sorted(edges, key=lambda e: (e[0], e[1])):
        open_now[value] += delta
        peaks[value] = max(peaks[value], open_now[value])
    return dict(peaks)


def test_no_region_has_more_than_its_budget_in_flight(outcome: Outcome) -> None:
    records = outcome.records["budgeted"]
    staging = {u for u, d in outcome.devices.items() if d["labels"]["env"] == "staging"}
    assert {r.device for r in records} == staging
    assert all(r.state == UpdateState.SUCCEEDED for r in records)
    region = {u: d["labels"]["region"] for u, d in outcome.devices.items()}
    peaks = in_flight_peaks(records, region)
    assert max(peaks.values()) == BUDGET, peaks  # reached (the budget paced it) ...
    assert all(p <= BUDGET for p in peaks.values()), peaks  # ... and never exceeded
    whole = in_flight_peaks(records, {u: "all" for u in region})["all"]
    assert whole > BUDGET, f"at most {whole} in flight: the budget was not per region"
    assert outcome.statuses["budgeted"]["phase"] == "Completed"


def test_devices_below_go_through_the_intermediate_version(outcome: Outcome) -> None:
    records = outcome.records["via"]
    dev = {u for u, d in outcome.devices.items() if d["labels"]["env"] == "dev"}
    paths: dict[str, list[tuple[int, str, str]]] = collections.defaultdict(list)
    for r in sorted(records, key=lambda r: (r.created_at, r.attempt)):
        paths[r.device].append((r.attempt, r.to_version, r.state.value))
    assert set(paths) == dev
    for device, path in paths.items():
        assert path == [(1, "1.0.6", "succeeded"), (2, "1.0.7", "succeeded")], (device, path)
        assert outcome.devices[device]["versions"]["agent"] == "1.0.7"
    status = outcome.statuses["via"]
    assert status["phase"] == "Completed" and status["targeted"] == len(dev), status
    hops = [(h["rollout"], h["toVersion"]) for h in outcome.history]
    assert sorted(hops) == [("via", "1.0.6"), ("via", "1.0.7")], outcome.history
