"""What a `fleetwave run` under test has stored: read from its store file after the fact,
so a test checks the records (the audit trail), not what the API happens to summarise."""

from __future__ import annotations

import asyncio

from fleetwave.store import open_store
from fleetwave.updates.model import UpdateRecord


def stored_attempts(store_url: str, rollout: str) -> list[UpdateRecord]:
    """Every attempt of `rollout` in the store at `store_url`, oldest first."""
    async def load() -> list[UpdateRecord]:
        store = open_store(store_url)
        try:
            return await store.updates.of_rollout(rollout)
        finally:
            await store.close()
    return asyncio.run(load())
