"""The one way out for commands: every command the engine publishes passes `Outbox.send`.

A hook on the way out (signing a command, counting it) goes here and nowhere else; the
publisher is injected, so tests give a fake one and the controller the MQTT link.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from fleetwave.protocol.messages import Command
from fleetwave.updates.model import Decision, DecisionKind

log = structlog.get_logger("fleetwave.engine")


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


SentSink = Callable[[list[tuple[str, Decision]]], Awaitable[None]]


class Outbox:
    """Commands queued by passes, published in order by one sender task.

    A pass hands its commands over and returns, so the next pass (and the status it
    shows) does not wait for the broker's acknowledgements of a 50,000-device wave. A
    record's command is queued once: a later pass that sees the record still unsent (its
    `sent` decision not stored yet) does not queue it again.
    """

    def __init__(self, publisher: CommandPublisher, *, clock: Callable[[], float],
                 batch: int = 500, room: int = 5000) -> None:
        self.publisher = publisher
        self.clock = clock
        self.batch = batch
        self.room = room
        """Commands a pass may queue beyond those already waiting (`free()`): planning
        runs ahead of publishing by at most this many, about a second of commands."""
        self.on_sent: SentSink | None = None
        """Stores the `sent` decisions (set once by the reconciler that owns this outbox)."""
        self.on_room: Callable[[], None] | None = None
        """Called once, after `want_room()`, when the queue is down to half of `room`."""
        self._room_wanted = False
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._queued: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._queue)

    def free(self) -> int:
        """How many more commands may be queued now."""
        return max(0, self.room - len(self._queue))

    def want_room(self) -> None:
        """A pass held devices back for lack of room: call `on_room` when there is."""
        self._room_wanted = True
        self._check_room()

    def _check_room(self) -> None:
        if self._room_wanted and len(self._queue) <= self.room // 2:
            self._room_wanted = False
            if self.on_room is not None:
                self.on_room()

    async def publish(self, device: str, command: Command) -> None:
        """The one place a command leaves the engine."""
        await self.publisher.publish_command(device, command)

    async def clear(self, device: str) -> None:
        await self.publisher.clear_command(device)

    def submit(self, outgoing: Sequence[Outgoing]) -> None:
        for item in outgoing:
            if item.record_id is not None:
                if item.record_id in self._queued:
                    continue
                self._queued.add(item.record_id)
            self._queue.append(item)
        if self._queue and (self._task is None or self._task.done()):
            self._idle.clear()
            self._task = asyncio.create_task(self._drain(), name="outbox")

    async def flush(self) -> None:
        """Until everything submitted so far is published and its `sent` stored."""
        await self._idle.wait()

    async def _drain(self) -> None:
        sent: list[tuple[str, Decision]] = []
        try:
            while self._queue:
                item = self._queue.popleft()
                self._check_room()
                try:
                    if item.command is None:
                        await self.clear(item.device)
                    else:
                        await self.publish(item.device, item.command)
                        if item.record_id is not None:
                            sent.append((item.record_id, Decision(DecisionKind.SENT,
                                                                  self.clock())))
                except Exception:
                    log.exception("engine.publish_failed", device=item.device)
                    self._queued.discard(item.record_id or "")
                if len(sent) >= self.batch or (sent and not self._queue):
                    await self._stored(sent)
                    sent = []
        finally:
            if sent:
                await self._stored(sent)
            self._idle.set()

    async def _stored(self, sent: list[tuple[str, Decision]]) -> None:
        try:
            if self.on_sent is not None:
                await self.on_sent(sent)
        except Exception:
            log.exception("engine.sent_not_stored", records=len(sent))
        finally:
            for record_id, _ in sent:
                self._queued.discard(record_id)
