"""One of two processes racing on the same database (run by test_concurrency.py).

Usage: python -m tests.store.race_worker URL NAME. Prints the ids it inserted as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from fleetwave.protocol.messages import ReportedState, StatusType
from fleetwave.store import open_store
from tests.store.records import status, update

DEVICES = 200
BATCH = 50


async def race(url: str, name: str) -> list[str]:
    store = open_store(url, lock_timeout=60)
    await store.migrate()
    shared = [update(f"shared-{i}", device=f"dev-{i}") for i in range(DEVICES)]
    # Both processes also try to open a second update of their own on the same devices and
    # a component nobody else uses: the database lets exactly one of each pair in.
    own = [update(f"{name}-{i}", device=f"dev-{i}", component="nodered") for i in range(DEVICES)]
    inserted: list[str] = []
    for start in range(0, DEVICES, BATCH):
        for chunk in (shared[start:start + BATCH], own[start:start + BATCH]):
            inserted += [r.id for r in await store.updates.create(chunk)]
    for round_, type_ in enumerate((StatusType.COMMAND_RECEIVED, StatusType.STARTED,
                                    StatusType.SUCCEEDED)):
        for start in range(0, DEVICES, BATCH):
            batch = [status(type_, f"corr-shared-{i}", device=f"dev-{i}")
                     for i in range(start, start + BATCH)]
            await store.updates.apply_statuses(batch)
            # the device reports the new version once it runs it (an earlier report of
            # the target version would settle the update: ConfirmedByReportedState)
            version = "1.0.6" if type_ == StatusType.SUCCEEDED else "1.0.5"
            await store.devices.apply_messages(
                [ReportedState(f"dev-{i}", {"agent": version}, 1000.0 * (round_ + 1) + i)
                 for i in range(start, start + BATCH)])
    await store.close()
    return inserted


if __name__ == "__main__":
    print(json.dumps(asyncio.run(race(sys.argv[1], sys.argv[2]))))
