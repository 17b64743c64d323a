"""How many device ids the controller has never seen it admits per minute.

Every admitted id costs memory, a store row and planning work for as long as the
controller runs. A fleet's churn is a trickle (devices added, replaced), but an
account that may write any device's topics (a leaked simulator or gateway
account, a too-broad ACL) can invent millions. A token bucket caps the rate
without touching known devices: their messages always pass.

A refused message is dropped, counted as `new_device_rate`, and not remembered:
the device becomes known when it publishes its state again once the bucket has
tokens (devices publish state on every connect and change, DESIGN.md section 2)
or when the controller next subscribes afresh (a restart), which redelivers
every retained state. The retained message itself stays on the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleetwave.protocol.messages import DeviceMessage, Online, ReportedState

BURST_MINUTES = 10
"""The bucket holds ten minutes' worth: a first start or a restart with a fleet that
grew meanwhile joins at once; only a sustained flood is refused."""


@dataclass
class NewDeviceGate:
    """A token bucket of `per_minute` new device ids, holding `BURST_MINUTES` minutes' worth.

    >>> gate = NewDeviceGate(per_minute=1, burst_minutes=1)
    >>> state = lambda uuid: ReportedState(device=uuid, versions={}, received_at=0.0)
    >>> [m.device for m in gate.admit([state("a"), state("b")], set().__contains__, 0.0)]
    ['a']
    >>> gate.refused, [m.device for m in gate.admit([state("b")], {"a"}.__contains__, 60.0)]
    (1, ['b'])
    """

    per_minute: int
    burst_minutes: int = BURST_MINUTES
    tokens: float = field(init=False)
    refused: int = field(default=0, init=False)
    """Messages refused since start (the caller counts them into its metric)."""
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.tokens = float(self.capacity)

    @property
    def capacity(self) -> int:
        return self.per_minute * self.burst_minutes

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self.tokens = min(float(self.capacity),
                              self.tokens + (now - self._at) * self.per_minute / 60.0)
        if self._at is None or now > self._at:
            self._at = now

    def admit(self, batch: Sequence[DeviceMessage], known: Callable[[str], bool],
              now: float) -> list[DeviceMessage]:
        """The messages of `batch` to keep: all of known devices, new ones while tokens last.

        Only state and online messages make a device known; a status of an unknown device
        finds no update record and is dropped downstream, so it passes untouched here.
        """
        self._refill(now)
        admitted: set[str] = set()
        kept: list[DeviceMessage] = []
        for msg in batch:
            device = msg.device
            if (not isinstance(msg, ReportedState | Online) or device in admitted
                    or known(device)):
                kept.append(msg)
                continue
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                admitted.add(device)
                kept.append(msg)
            else:
                self.refused += 1
        return kept
