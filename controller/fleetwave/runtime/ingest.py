"""Ingest: device messages from the MQTT link into the store and memory.

Statuses: one store transaction per batch, then memory. The link acknowledges a batch's
messages to the broker only after this returns, i.e. after the store committed its statuses:
a controller killed mid-batch gets the same statuses again from its persistent session
(`mqtt/link.py`). State and liveness reports go to memory at once and to the store right
behind it (`writeback.py`): the broker retains them and resends them on a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from fleetwave.metrics import REFUSAL_REASONS, Metrics
from fleetwave.protocol.messages import DeviceMessage, Online, ReportedState, Status, StatusType
from fleetwave.protocol.new_devices import NewDeviceGate
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.gauges import count_final
from fleetwave.runtime.writeback import ReportWriter
from fleetwave.store import Store
from fleetwave.updates.model import UpdateRecord

log = structlog.get_logger("fleetwave.ingest")


class Ingest:
    def __init__(self, store: Store, fleet: FleetState, metrics: Metrics, lock: asyncio.Lock,
                 *, wake: Callable[[], None], to_clear: set[str],
                 new_devices: NewDeviceGate | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.fleet = fleet
        self.metrics = metrics
        self.lock = lock
        self.wake = wake
        self.to_clear = to_clear
        """Shared with the reconciler, which publishes the clears on its next pass."""
        self.counting = False
        """Count final records on /metrics (not while loading what the store remembers)."""
        self.new_devices = new_devices
        """Caps unknown device ids admitted per minute (`--max-new-devices-per-minute`)."""
        self.clock = clock
        self._refusals_logged_at = float("-inf")
        self.reports = ReportWriter(store, lock, on_settled=self._settled)
        """State and liveness reports on their way to the store, behind memory."""

    async def on_device_messages(self, batch: Sequence[DeviceMessage]) -> None:
        for status in batch:
            if (isinstance(status, Status) and status.type is StatusType.FAILED
                    and status.reason in REFUSAL_REASONS):
                self.metrics.commands_refused.labels(reason=status.reason).inc()
        async with self.lock:
            batch = self._admit(batch)
            statuses = [m for m in batch if isinstance(m, Status)]
            device_msgs = [m for m in batch if isinstance(m, ReportedState | Online)]
            finished: set[str] = set()
            if statuses:  # before the reports: a status in hand settles its own update
                for outcome in await self.store.updates.apply_statuses(statuses):
                    after = outcome.after
                    if after is None:
                        continue
                    if self.fleet.remember(after) and self.counting:
                        count_final(self.metrics, after)
                    if after.is_terminal and (outcome.before is None or outcome.before.is_open):
                        finished.add(after.device)
            if device_msgs:
                merge = self.fleet.merge_device_message
                # What memory already holds (or newer) is stored or on its way there.
                self.reports.add([msg for msg in device_msgs if merge(msg)])
            # A final state clears the retained command, so a rebooting device is not
            # updated again. The next pass publishes the clears: waiting for the broker
            # here would hold up the ingest thread that carries its acknowledgements.
            self.to_clear.update(finished)
        self.wake()
        await self.reports.room()

    def _settled(self, records: list[UpdateRecord]) -> None:
        """Open updates that a stored state report settled (its status was lost)."""
        for settled in records:
            if self.fleet.remember(settled) and self.counting:
                count_final(self.metrics, settled)
            self.to_clear.add(settled.device)
        self.wake()

    def _admit(self, batch: Sequence[DeviceMessage]) -> Sequence[DeviceMessage]:
        """Known devices always pass; unknown ids only while `new_devices` has tokens.

        Under the fleet lock, after the start-up load: a device the store knows is never
        mistaken for a new one by a resync that races the load.
        """
        gate = self.new_devices
        if gate is None:
            return batch
        before = gate.refused
        kept = gate.admit(batch, self.fleet.devices.__contains__, self.clock())
        if gate.refused > before:
            self.metrics.mqtt_dropped.labels(reason="new_device_rate").inc(gate.refused - before)
            now = self.clock()
            if now - self._refusals_logged_at >= 60.0:  # one line a minute, not per batch
                self._refusals_logged_at = now
                log.warning("mqtt.new_devices_refused", per_minute=gate.per_minute,
                            total_refused=gate.refused,
                            hint="raise --max-new-devices-per-minute if this is real churn")
        return kept
