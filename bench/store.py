"""How many device statuses per second the store applies, one per transaction vs batched.

    python bench/store.py [--count 20000] [--batch 500]

Runs on SQLite (a file in a temp dir) and on PostgreSQL (FLEETWAVE_TEST_POSTGRES_URL,
or a throwaway cluster started here). Each status moves its own update record
forward, as the MQTT ingest would hand them over.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import ENV, fresh_database, throwaway_cluster  # noqa: E402

from fleetwave.protocol.messages import Status, StatusType  # noqa: E402
from fleetwave.store import open_store  # noqa: E402
from fleetwave.updates.model import UpdateRecord, UpdateState  # noqa: E402


def records(count: int, prefix: str) -> list[UpdateRecord]:
    return [UpdateRecord(id=f"{prefix}{i}", device=f"{prefix}dev-{i}", rollout="bench",
                         component="agent", to_version="1.0.6", state=UpdateState.PENDING,
                         attempt=1, correlation_id=f"{prefix}corr-{i}", created_at=1.0,
                         updated_at=1.0) for i in range(count)]


def statuses(batch: list[UpdateRecord], at: float) -> list[Status]:
    return [Status(device=r.device, type=StatusType.STARTED, correlation_id=r.correlation_id,
                   received_at=at, current_version="1.0.5") for r in batch]


async def measure(url: str, count: int, single_count: int, batch: int) -> tuple[float, float]:
    store = open_store(url)
    await store.migrate()
    try:
        single = records(single_count, "s")
        await store.updates.create(single)
        msgs = statuses(single, 2.0)
        started = time.perf_counter()
        for msg in msgs:
            await store.updates.apply_statuses([msg])
        one_rate = len(msgs) / (time.perf_counter() - started)

        many = records(count, "b")
        for start in range(0, count, batch):
            await store.updates.create(many[start:start + batch])
        msgs = statuses(many, 2.0)
        started = time.perf_counter()
        for start in range(0, count, batch):
            outcomes = await store.updates.apply_statuses(msgs[start:start + batch])
            assert all(o.after is not None for o in outcomes)
        batch_rate = len(msgs) / (time.perf_counter() - started)
        return one_rate, batch_rate
    finally:
        await store.close()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    with throwaway_cluster() as started:
        yield started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="statuses applied in batches")
    parser.add_argument("--single", type=int, default=2_000,
                        help="statuses applied one per transaction")
    parser.add_argument("--batch", type=int, default=500, help="statuses per batch")
    args = parser.parse_args()
    print(f"{'backend':<11} {'one per transaction':>22} {'batched (' + str(args.batch) + ')':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        one, many = await measure(f"sqlite:///{tmp}/bench.db", args.count, args.single,
                                  args.batch)
        print(f"{'sqlite':<11} {one:>18,.0f}/s {many:>14,.0f}/s")
    with postgres_server() as server, fresh_database(server) as url:
        one, many = await measure(url, args.count, args.single, args.batch)
        print(f"{'postgresql':<11} {one:>18,.0f}/s {many:>14,.0f}/s")


if __name__ == "__main__":
    asyncio.run(main())
