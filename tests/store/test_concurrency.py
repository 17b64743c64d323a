"""Two controller processes on one database lose nothing and duplicate nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import sqlalchemy as sa

from fleetwave.store import open_store
from fleetwave.store.schema import OPEN_STATES_SQL, updates
from tests.store.race_worker import DEVICES

ROOT = Path(__file__).resolve().parents[2]


async def test_two_processes_racing_on_the_same_messages(store_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.store.race_worker", store_url, name, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for name in ("one", "two")]
    outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate() for w in workers)), 300)
    results = []
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
        results.append(json.loads(out))
    inserted = results[0] + results[1]

    # Every shared record was inserted by exactly one process; of each pair of competing
    # open updates exactly one got in.
    shared = [i for i in inserted if i.startswith("shared-")]
    assert sorted(shared) == sorted(f"shared-{i}" for i in range(DEVICES))
    own = [i for i in inserted if not i.startswith("shared-")]
    assert len(own) == DEVICES
    assert {i.split("-", 1)[1] for i in own} == {str(i) for i in range(DEVICES)}

    store = open_store(store_url)
    try:
        async with store.engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(updates))).scalar()
            doubled = (await conn.execute(sa.text(
                f"SELECT COUNT(*) FROM (SELECT device, component FROM updates "
                f"WHERE {OPEN_STATES_SQL} GROUP BY device, component HAVING COUNT(*) > 1) d"))
            ).scalar()
        assert (total, doubled) == (2 * DEVICES, 0)
        # No status was lost: every shared update went all the way.
        records = [r for r in await store.updates.of_rollout("r1") if r.id.startswith("shared-")]
        assert {r.state.value for r in records} == {"succeeded"}
        assert all(r.acknowledged_at is not None and r.started_at is not None for r in records)
        devices = await store.devices.all()
        assert len(devices) == DEVICES
        assert {d.versions["agent"] for d in devices} == {"1.0.6"}
    finally:
        await store.close()
