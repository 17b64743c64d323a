"""Ingest: device messages from the MQTT link into the store, then into memory.

One store transaction per kind per batch. The link acknowledges a batch's messages to the
broker only after this returns, i.e. after the store committed them: a controller killed
mid-batch gets the same messages again from its persistent session (`mqtt/link.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from fleetwave.metrics import Metrics
from fleetwave.protocol.messages import DeviceMessage, Online, ReportedState, Status
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.gauges import count_final
from fleetwave.store import Store


class Ingest:
    def __init__(self, store: Store, fleet: FleetState, metrics: Metrics, lock: asyncio.Lock,
                 *, wake: Callable[[], None], to_clear: set[str]) -> None:
        self.store = store
        self.fleet = fleet
        self.metrics = metrics
        self.lock = lock
        self.wake = wake
        self.to_clear = to_clear
        """Shared with the reconciler, which publishes the clears on its next pass."""
        self.counting = False
        """Count final records on /metrics (not while loading what the store remembers)."""

    async def on_device_messages(self, batch: Sequence[DeviceMessage]) -> None:
        statuses = [m for m in batch if isinstance(m, Status)]
        device_msgs = [m for m in batch if isinstance(m, ReportedState | Online)]
        async with self.lock:
            if device_msgs:
                await self.store.apply_device_messages(device_msgs)
                merge = self.fleet.merge_device_message
                for msg in device_msgs:
                    merge(msg)
            finished: set[str] = set()
            if statuses:
                for outcome in await self.store.apply_statuses(statuses):
                    after = outcome.after
                    if after is None:
                        continue
                    if self.fleet.remember(after) and self.counting:
                        count_final(self.metrics, after)
                    if after.is_terminal and (outcome.before is None or outcome.before.is_open):
                        finished.add(after.device)
            # A final state clears the retained command, so a rebooting device is not
            # updated again. The next pass publishes the clears: waiting for the broker
            # here would hold up the ingest thread that carries its acknowledgements.
            self.to_clear.update(finished)
        self.wake()
