"""The one way out for commands: every command the engine publishes passes `Outbox.send`.

A hook on the way out (signing a command, counting it) goes here and nowhere else; the
publisher is injected, so tests give a fake one and the controller the MQTT link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetwave.protocol.messages import Command
from fleetwave.updates.model import Decision, DecisionKind


class CommandPublisher(Protocol):
    """What the engine needs of the MQTT link (and what tests may replace)."""

    async def publish_command(self, device: str, command: Command) -> None: ...

    async def clear_command(self, device: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command to publish after the pass (None: clear the retained command)."""

    device: str
    command: Command | None
    record_id: str | None = None
    """Set for update and rollback commands: the record that gets `sent_at`."""


class Outbox:
    def __init__(self, publisher: CommandPublisher) -> None:
        self.publisher = publisher

    async def publish(self, device: str, command: Command) -> None:
        await self.publisher.publish_command(device, command)

    async def clear(self, device: str) -> None:
        await self.publisher.clear_command(device)

    async def send(self, outgoing: Sequence[Outgoing], clock: Callable[[], float]
                   ) -> list[tuple[str, Decision]]:
        """Publish in order; return the `sent` decisions of the records whose command went
        out."""
        sent: list[tuple[str, Decision]] = []
        for item in outgoing:
            if item.command is None:
                await self.clear(item.device)
                continue
            await self.publish(item.device, item.command)
            if item.record_id is not None:
                sent.append((item.record_id, Decision(DecisionKind.SENT, clock())))
        return sent
