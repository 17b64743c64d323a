"""Helpers for tests that drive the controller's link against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from fleetwave.metrics import Metrics, build_metrics
from fleetwave.mqtt import MqttLink, MqttSettings
from fleetwave.protocol.messages import DeviceMessage
from fleetwave.protocol.signing import SigningKey
from tests.support.broker import RunningBroker

LINK_KEY = SigningKey.generate()
"""The key the `link` fixture signs with."""


class Collector:
    """The link's batch callback: keeps every message and the batch sizes."""

    def __init__(self) -> None:
        self.messages: list[DeviceMessage] = []
        self.batches: list[int] = []
        self._changed = asyncio.Event()

    async def __call__(self, batch: list[DeviceMessage]) -> None:
        self.messages.extend(batch)
        self.batches.append(len(batch))
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[DeviceMessage]], bool],
                       within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition owned by another thread (paho's), failing after `within` seconds."""
    steps = int(within / 0.02)
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within} s")


def settings_for(broker: RunningBroker, **kw: object) -> MqttSettings:
    user, password = broker.controller
    base: dict[str, object] = {"url": broker.url, "username": user, "password": password,
                               "reconnect_min": 0.1, "reconnect_max": 0.5,
                               "client_id": "fleetwave-test"}
    base.update(kw)
    return MqttSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def metrics() -> Metrics:
    return build_metrics(CollectorRegistry())


@pytest.fixture
async def link(broker: RunningBroker,
               metrics: Metrics) -> AsyncIterator[tuple[MqttLink, Collector]]:
    collector = Collector()
    async with MqttLink(settings_for(broker), metrics, collector,
                        signing_key=LINK_KEY) as running:
        async with asyncio.timeout(5):
            await running.wait_connected()
        yield running, collector
