"""Fixtures of the runtime tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetwave.store import Store, open_store
from tests.runtime.checkservers import sentinel

__all__ = ["sentinel", "store"]


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """A real store on in-memory SQLite, migrated: the fast runtime tests' database."""
    store = open_store("sqlite:///:memory:")
    await store.migrate()
    yield store
    await store.close()
