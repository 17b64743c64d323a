"""The controller's link to the broker: device messages in (parsed, in batches), commands out.

Ingest path, per message, in the network thread: parse and validate (`parse_message`), append
to the pending batch. Per batch, on the event loop: one `on_messages(batch)` call, which the
store turns into one transaction. The loop is woken once when a batch starts and once when it
is full, so the cost per message is parsing plus a list append (see `bench/mqtt.py`).

The broker keeps our persistent session (clean start off, a session expiry): status sent
while the controller is away is delivered when it returns. Retained `state` and `online`
messages arrive through the same callback when we subscribe at start: that is the resync.

Delivery is at least once, and nothing is lost: paho's acknowledgements are manual, and a
batch's messages are acknowledged only after `on_messages` returned, i.e. after the store
committed them. A controller killed mid-batch gets the unacknowledged messages again from its
persistent session; the store applies a repeated status as a no-op.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleetwave.metrics import Metrics
from fleetwave.mqtt.connection import ConnectionOptions, PahoConnection
from fleetwave.mqtt.settings import MqttSettings
from fleetwave.protocol.messages import Command, DeviceMessage, Online, ReportedState, Status
from fleetwave.protocol.parsing import Dropped, parse_message
from fleetwave.protocol.reports import encode
from fleetwave.protocol.signing import SigningKey
from fleetwave.protocol.topics import TopicKind, Topics

log = structlog.get_logger(__name__)

class NotStored(Exception):
    """Raised by `on_messages` for a batch it could not store and has already reported:
    the link leaves it unacknowledged, without a traceback."""


OnMessages = Callable[[list[DeviceMessage]], Awaitable[None]]

PACKET_OVERHEAD = 4096
"""Bytes of a PUBLISH beyond its payload that we allow for (fixed header, topic, properties).

Payloads up to `max_payload` + this still reach us and are dropped and counted as
`too_large`; anything larger the broker discards for us (Mosquitto logs it), so the
network thread never reads it."""

_KIND_LABEL: dict[type, str] = {Status: "status", ReportedState: "state", Online: "online"}


class MqttLink:
    """`async with MqttLink(settings, metrics, on_messages) as link:` connects in the background
    (reconnecting forever) and delivers device messages to `on_messages` in batches."""

    def __init__(self, settings: MqttSettings, metrics: Metrics, on_messages: OnMessages,
                 *, signing_key: SigningKey, topics: Topics | None = None) -> None:
        self.settings = settings
        self._signing_key = signing_key
        self.metrics = metrics
        self.topics = topics or Topics(settings.topic_prefix)
        self._on_messages = on_messages
        address = settings.address()
        self._options = ConnectionOptions(
            host=address.host, port=address.port, client_id=settings.client_id,
            username=settings.username if settings.username is not None else address.username,
            password=settings.password if settings.password is not None else address.password,
            tls=address.tls, ca_file=settings.ca_file, cert_file=settings.cert_file,
            key_file=settings.key_file, clean_start=False,
            session_expiry=settings.session_expiry, keepalive=settings.keepalive,
            reconnect_min=settings.reconnect_min, reconnect_max=settings.reconnect_max,
            publish_window=settings.publish_window, manual_ack=True,
            max_packet_size=settings.max_payload + PACKET_OVERHEAD)
        self._conn = PahoConnection(self._options, on_message=self._handle_message,
                                    on_connect=self._handle_connect,
                                    on_connected_change=self._connected_changed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: list[DeviceMessage] = []
        self._acks: list[tuple[int, int, int, int]] = []
        """(message id, qos, session, how many pending messages precede or are it) of every
        message since the last batch, in order: a chunk's messages are acknowledged as soon
        as that chunk is stored."""
        self._max_pending = settings.batch_max * 20
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._subscribed_once = False
        self._closing = False
        self._drop_logged: dict[str | None, float] = {}
        self._drop_log_reset = time.monotonic()
        self._received = {cls: metrics.mqtt_received.labels(kind=label)
                          for cls, label in _KIND_LABEL.items()}
        self._dropped = {reason: metrics.mqtt_dropped.labels(reason=reason)
                         for reason in ("too_large", "invalid_json", "invalid_schema",
                                        "uuid_mismatch", "unknown_topic")}

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.metrics.mqtt_connected.set(0)
        self._consumer = asyncio.create_task(self._consume(), name="mqtt-ingest")
        await self._conn.start()

    async def stop(self) -> None:
        """Deliver (and acknowledge) what was already received, flush publishes, disconnect
        (the session stays on the broker), then return. Messages arriving meanwhile are left
        unacknowledged: the broker sends them again next time."""
        self._closing = True
        if self._consumer is not None:
            self._wake.set()
            self._full.set()
            try:
                await asyncio.wait_for(self._consumer, 30)
            except TimeoutError:
                log.warning("mqtt.ingest.stop_timeout", pending=len(self._pending))
            self._consumer = None
        await self._conn.stop()
        self.metrics.mqtt_connected.set(0)

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def last_error(self) -> str | None:
        """Why the broker is unreachable, while it is (for /readyz)."""
        return self._conn.last_error

    async def wait_connected(self) -> None:
        """Until connected (the first time, or again); bound it with `asyncio.timeout`."""
        await self._conn.wait_connected()

    # --- publishing ---

    async def publish_command(self, device: str, command: Command) -> None:
        """Sign and publish a retained QoS 1 command; waits only while 1,000 are
        unacknowledged. Every command leaves through here, so every command is signed."""
        if command.device != device or command.release is None or command.expires_at is None:
            raise ValueError(f"command for {device} lacks its device, release or expiry")
        payload = encode(self._signing_key.sign(command.to_body()))
        await self._conn.publish(self.topics.update(device), payload, retain=True)
        self.metrics.mqtt_published.labels(kind=command.action).inc()

    async def clear_command(self, device: str) -> None:
        """Remove the retained command (a zero-length retained publish), so a rebooting
        device is not updated again."""
        await self._conn.publish(self.topics.update(device), b"", retain=True)
        self.metrics.mqtt_published.labels(kind="clear").inc()

    async def flush(self) -> None:
        """Until the broker acknowledged every command published so far (bound it with
        `asyncio.timeout`)."""
        await self._conn.flush()

    @property
    def unacknowledged(self) -> int:
        return self._conn.unacknowledged

    # --- network thread ---

    def _handle_connect(self, client: paho.Client, session_present: bool) -> list[int] | None:
        # Subscribe on the first connection of this process even when the broker kept our
        # session: a fresh subscription is what makes it send the retained state (resync).
        if self._subscribed_once and session_present:
            return None
        self._subscribed_once = True
        opts = SubscribeOptions(qos=1)
        status = self.topics.filter(TopicKind.STATUS)
        if self.settings.shared_group:
            status = f"$share/{self.settings.shared_group}/{status}"
        _, mid = client.subscribe([(status, opts), (self.topics.filter(TopicKind.STATE), opts),
                                   (self.topics.filter(TopicKind.ONLINE), opts)])
        log.info("mqtt.subscribing", client_id=self.settings.client_id,
                 session_present=session_present, shared_group=self.settings.shared_group)
        return [mid] if mid is not None else None

    def _handle_message(self, client: paho.Client, userdata: Any,
                        msg: paho.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: delivered again on the next connection
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = ""
            item = parse_message(topic, bytes(msg.payload), time.time(), self.topics,
                                 self.settings.max_payload)
            mid, qos, session = msg.mid, msg.qos, self._conn.session
            if type(item) is Dropped:
                self._drop(item)
                with self._lock:  # acknowledged in order, with the chunk it follows
                    self._acks.append((mid, qos, session, len(self._pending)))
                    n = len(self._acks)
                if n == 1:
                    self._call(self._wake.set)
                return
            with self._lock:
                self._pending.append(item)  # type: ignore[arg-type]
                n = len(self._pending)
                self._acks.append((mid, qos, session, n))
            if n == 1:
                self._call(self._wake.set)
            elif n == self.settings.batch_max:
                self._call(self._full.set)
            elif n >= self._max_pending:
                self._backpressure()
        except Exception:  # nothing a device sends may kill the network thread
            log.exception("mqtt.ingest.error")

    def _backpressure(self) -> None:
        """The callback is behind: stop reading the socket until it catches up (TCP and the
        broker's queue hold the rest) instead of growing memory without bound."""
        while len(self._pending) >= self._max_pending and not self._closing:
            time.sleep(0.005)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(fn)

    def _drop(self, dropped: Dropped) -> None:
        self._dropped[dropped.reason].inc()
        now = time.monotonic()
        interval = self.settings.drop_log_interval
        if now - self._drop_log_reset > interval:
            self._drop_logged.clear()
            self._drop_log_reset = now
        if dropped.device in self._drop_logged:
            return
        if len(self._drop_logged) < 10000:
            self._drop_logged[dropped.device] = now
        log.warning("mqtt.message.dropped", device=dropped.device, reason=dropped.reason,
                    detail=dropped.detail)

    # --- event loop ---

    def _connected_changed(self, value: bool) -> None:
        self.metrics.mqtt_connected.set(1 if value else 0)
        if value:
            log.info("mqtt.connected", client_id=self.settings.client_id)

    async def _consume(self) -> None:
        batch_max = self.settings.batch_max
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing and len(self._pending) < batch_max:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.settings.batch_delay)
            with self._lock:
                batch, self._pending = self._pending, []
                acks, self._acks = self._acks, []
            # counted per batch on the loop, not per message in the network thread
            for cls, n in collections.Counter(map(type, batch)).items():
                self._received[cls].inc(n)
            await self._deliver(batch, acks)
            if self._closing and not self._pending:
                return

    async def _deliver(self, batch: list[DeviceMessage],
                       acks: list[tuple[int, int, int, int]]) -> None:
        """Hand `batch` over in chunks; acknowledge each chunk's messages once it is stored.
        After a failed chunk nothing more is acknowledged (acknowledgements go in order):
        the broker delivers those messages again after a reconnect."""
        done = 0
        for start in range(0, len(batch), self.settings.batch_max):
            end = start + self.settings.batch_max
            try:
                await self._on_messages(batch[start:end])
            except NotStored:
                return  # already told; the broker delivers them again after a reconnect
            except Exception:
                log.exception("mqtt.ingest.callback_failed", size=len(batch))
                return
            upto = done
            while upto < len(acks) and acks[upto][3] <= end:
                upto += 1
            self._conn.ack(acks[done:upto])
            done = upto
        self._conn.ack(acks[done:])
