"""One full plan_fleet pass over 10k, 100k and 1M devices mid-rollout.

The fleet is in a realistic mix: the canary and half of step two done and
healthy, some succeeded waiting for stableFor, up to maxInFlight open in every
state, a few failed (some retrying, some parked), some unreachable, and a
quarter already at the version. Beside each figure, a naive baseline measured
in the same run (hash + sort of the same devices) so the ratio survives a noisy
machine. Run: `python bench/planner.py [sizes...]`.
"""

from __future__ import annotations

import random
import sys
import time
from hashlib import blake2b
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controller"))

from fleetwave.planner.model import DeviceView, HashCache, RolloutState
from fleetwave.planner.plan import plan_fleet, record_ids
from fleetwave.resources.model import Rollout, SourceRef, resource_from
from fleetwave.updates.model import Health, Reason, UpdateRecord, UpdateState

NOW = 1_790_000_000.0


def rollout() -> Rollout:
    r = resource_from({
        "apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "agent-1-0-6"},
        "spec": {"component": "agent", "version": "1.0.6",
                 "selector": {"matchLabels": {"device_type": "rpi4"},
                              "matchExpressions": [{"key": "env", "operator": "In",
                                                    "values": ["production"]}]},
                 "strategy": {"steps": [{"percent": 5}, {"percent": 25, "pause": "30m"},
                                        {"percent": 50}, {"percent": 100}],
                              "maxInFlight": 500},
                 "failurePolicy": {"maxFailurePercent": 50}},
    }, SourceRef(kind="folder"))
    assert isinstance(r, Rollout)
    return r


def world(n: int) -> tuple[list[DeviceView], dict[str, list[UpdateRecord]], RolloutState]:
    rnd = random.Random(n)
    r = rollout()
    devices = []
    records: dict[str, list[UpdateRecord]] = {}
    open_left = 500
    for i in range(n):
        uuid = f"dev-{i:07d}"
        roll = rnd.random()
        version = "1.0.6" if roll < 0.25 else "1.0.5"
        labels = {"device_type": "rpi4", "env": "production", "region": f"r{i % 7}"}
        online = rnd.random() > 0.03
        devices.append(DeviceView(uuid, {"agent": version}, labels, online, NOW - 5))
        if roll < 0.25 or roll > 0.55:
            continue  # already there, or not reached yet
        rid, cid = record_ids(r.name, 1, uuid, 1)
        base = UpdateRecord(id=rid, device=uuid, rollout=r.name, component="agent",
                            to_version="1.0.6", state=UpdateState.SUCCEEDED, attempt=1,
                            correlation_id=cid, created_at=NOW - 3000, updated_at=NOW - 2000,
                            from_version="1.0.5", sent_at=NOW - 3000, completed_at=NOW - 2000,
                            health=Health.HEALTHY)
        kind = rnd.random()
        if kind < 0.9:
            rec = base
            devices[-1] = DeviceView(uuid, {"agent": "1.0.6"}, labels, True, NOW - 5)
        elif kind < 0.95:
            rec = base.__class__(**{**_fields(base), "health": Health.UNKNOWN,
                                    "completed_at": NOW - 60})
        elif kind < 0.98 and open_left > 0:
            open_left -= 1
            rec = base.__class__(**{**_fields(base), "state": UpdateState.IN_PROGRESS,
                                    "health": Health.UNKNOWN, "completed_at": None,
                                    "started_at": NOW - 100})
        elif kind < 0.99:
            rec = base.__class__(**{**_fields(base), "state": UpdateState.FAILED,
                                    "health": Health.UNKNOWN, "reason": "DeviceReportedFailure"})
        else:
            rec = base.__class__(**{**_fields(base), "state": UpdateState.TIMEOUT,
                                    "health": Health.UNKNOWN, "reason": Reason.UNREACHABLE})
        records[uuid] = [rec]
    state = RolloutState(generation=1, spec_hash=r.spec_hash, version="1.0.6",
                         phase="Progressing", current_step=2, step_started_at=NOW - 600,
                         started_at=NOW - 7200)
    return devices, records, state


def _fields(rec: UpdateRecord) -> dict[str, object]:
    return {f: getattr(rec, f) for f in rec.__slots__}  # type: ignore[attr-defined]


def baseline(devices: list[DeviceView]) -> float:
    t = time.perf_counter()
    keys = sorted(blake2b(f"agent-1-0-6\x00{d.uuid}".encode(), digest_size=8).digest()
                  for d in devices)
    del keys
    return time.perf_counter() - t


def main(sizes: list[int]) -> None:
    r = rollout()
    print(f"{'devices':>9} {'plan_fleet (cold)':>18} {'plan_fleet (warm)':>18} "
          f"{'hash+sort baseline':>19} {'ratio':>6} {'actions':>8}")
    for n in sizes:
        devices, recs, state = world(n)
        records = {r.name: recs}
        cache = HashCache()
        t = time.perf_counter()
        fp = plan_fleet([r], devices, records, {r.name: state}, NOW, cache=cache)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        fp = plan_fleet([r], devices, records, {r.name: state}, NOW, cache=cache)
        warm = time.perf_counter() - t
        base = baseline(devices)
        p = fp.plans[r.name]
        print(f"{n:>9,} {cold:>17.3f}s {warm:>17.3f}s {base:>18.3f}s {warm / base:>6.2f} "
              f"{len(p.actions):>8}   {p.status.phase} step {p.status.current_step} "
              f"{p.status.progress}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
