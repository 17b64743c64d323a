"""One paho-mqtt 2 client in its own network thread, driven from asyncio.

Why not aiomqtt: aiomqtt runs paho's socket handling on the event loop and wraps every
inbound message in an asyncio queue hand-off, so the controller's ingest, its store writes and
its planner all share one thread, message by message. Measured with `bench/mqtt.py`, paho in
its own thread with one hand-off per *batch* keeps ingest close to a bare paho subscriber,
which is what a fleet's status burst needs. The event loop still owns all decisions: this
class only moves bytes and wakes the loop with `call_soon_threadsafe` once per batch or per
burst of acknowledgements, never per message. Reads are buffered and a batch's PUBACKs go out
in one write (`reader.py`).

Used by the controller (`MqttLink`) and by the simulator (one per group of devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetwave.mqtt.reader import Client

log = structlog.get_logger(__name__)


class PublishError(RuntimeError):
    """paho refused a publish (e.g. payload too large); the message was not queued."""


@dataclass(frozen=True)
class ConnectionOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    clean_start: bool = False
    session_expiry: int = 86400
    keepalive: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    publish_window: int = 1000
    will_topic: str | None = None
    will_payload: bytes = b""
    max_packet_size: int | None = None
    """Sent as MQTT 5 Maximum-Packet-Size on CONNECT: the broker discards (never sends us)
    a larger packet, so no message can make paho buffer up to the protocol's 256 MiB."""
    manual_ack: bool = False
    """Acknowledge inbound QoS 1 messages only when `ack()` is called (after they are
    stored), not when the callback returns."""


OnConnect = Callable[[paho.Client, bool], list[int] | None]
"""Called in the network thread after each successful CONNACK, with `session_present`; it
returns the message ids of the SUBSCRIBEs it sent, and the connection counts as connected once
all are acknowledged (so nothing published right after `wait_connected()` is missed)."""
OnMessage = Callable[[paho.Client, Any, paho.MQTTMessage], None]
"""paho's own on_message signature: called in the network thread for every message."""


class PahoConnection:
    """A reconnecting MQTT 5 client with a bounded window of unacknowledged QoS 1 publishes.

    Reconnects forever: paho's capped exponential back-off (`reconnect_min` doubling up to
    `reconnect_max`) plus our random jitter of up to the same delay again. Messages published
    while disconnected stay in paho's session and are sent on reconnect; the window keeps
    their number below paho's 16-bit message id space.
    """

    def __init__(self, options: ConnectionOptions, *, on_message: OnMessage,
                 on_connect: OnConnect | None = None,
                 on_connected_change: Callable[[bool], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.options = options
        self._on_connect_cb = on_connect
        self._on_connected_change = on_connected_change
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._failures = 0
        self.last_error: str | None = None
        """Why the last connection attempt failed (None once connected)."""
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        # publish window: `_sent` written by the loop, `_acked` by the network thread only
        self._sent = 0
        self._acked = 0
        self._window_waiting = False
        self._window_waiters: list[asyncio.Future[None]] = []

        client = Client(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                        protocol=MQTTProtocolVersion.MQTTv5, manual_ack=options.manual_ack)
        self.session = 0
        """Counts connections (network thread); a message id means something only on the
        connection that delivered it."""
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.tls:
            client.tls_set(ca_certs=options.ca_file, certfile=options.cert_file,
                           keyfile=options.key_file, cert_reqs=ssl.CERT_REQUIRED)
        if options.will_topic is not None:
            client.will_set(options.will_topic, options.will_payload, qos=1, retain=True)
        client.reconnect_delay_set(options.reconnect_min, options.reconnect_max)  # type: ignore[arg-type]
        # paho sends at most 20 QoS 1 messages before their PUBACKs by default, one round trip
        # per 20 commands; 100 measured fastest (TOOLING.md), our window bounds the rest.
        client.max_inflight_messages_set(100)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        self._awaiting_suback: set[int] = set()
        client.on_message = on_message
        self.client = client

    # --- lifecycle (event loop) ---

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        """Start connecting in the background; `wait_connected()` awaits the first CONNACK."""
        self._loop = asyncio.get_running_loop()
        self._connected_event = asyncio.Event()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.options.session_expiry
        if self.options.max_packet_size is not None:
            props.MaximumPacketSize = self.options.max_packet_size
        self.client.connect_async(self.options.host, self.options.port,
                                  keepalive=self.options.keepalive,
                                  clean_start=self.options.clean_start, properties=props)
        self.client.loop_start()

    async def wait_connected(self) -> None:
        """Until connected (bound it with `asyncio.timeout`)."""
        assert self._connected_event is not None, "start() first"
        await self._connected_event.wait()

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Wait (bounded) for outstanding publishes, disconnect cleanly (the broker keeps a
        persistent session), and join the network thread."""
        if self._connected:
            try:
                async with asyncio.timeout(flush_timeout):
                    await self.flush()
            except TimeoutError:
                log.warning("mqtt.stop.unacknowledged", client_id=self.options.client_id,
                            unacknowledged=self.unacknowledged)
        self._stopping.set()
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        self._set_connected(False)
        for fut in self._window_waiters:
            if not fut.done():
                fut.cancel()

    # --- publishing (event loop) ---

    @property
    def unacknowledged(self) -> int:
        return self._sent - self._acked

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      qos: int = 1) -> None:
        """Queue one QoS 1 message; waits while the window of unacknowledged ones is full.

        Returns once paho holds the message; QoS 1 and paho's resend on reconnect deliver it.
        `flush()` waits until the broker has acknowledged everything.
        """
        if not self._connected:
            await self._until_connected(topic)
        window = self.options.publish_window
        if self._sent - self._acked >= window:
            await self._wait_until(lambda: self._sent - self._acked < window)
        self._sent += 1
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._sent -= 1
            raise PublishError(f"publish to {topic} refused: {paho.error_string(info.rc)}")

    async def _until_connected(self, topic: str) -> None:
        """Hold publishes while disconnected: paho would queue them without bound, and a
        command decided before an outage may be stale after it."""
        assert self._connected_event is not None, "start() first"
        while not self._connected:
            if self._stopping.is_set():
                raise PublishError(f"publish to {topic} refused: not connected to "
                                   f"{self.broker}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected_event.wait(), 0.5)

    @property
    def broker(self) -> str:
        """The broker as logs name it (no credentials: they are never in host and port)."""
        scheme = "mqtts" if self.options.tls else "mqtt"
        return f"{scheme}://{self.options.host}:{self.options.port}"

    async def flush(self) -> None:
        """Wait until the broker acknowledged every publish so far (bound it with
        `asyncio.timeout`)."""
        await self._wait_until(lambda: self._sent == self._acked)

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        """Sleep until an acknowledgement makes `predicate` true (woken once per burst)."""
        assert self._loop is not None
        while not predicate():
            fut = self._loop.create_future()
            self._window_waiters.append(fut)
            self._window_waiting = True
            if predicate():  # an ack landed before the flag was raised
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, 0.5)

    def _wake_window(self) -> None:
        self._window_waiting = False
        waiters, self._window_waiters = self._window_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def ack(self, acks: Sequence[tuple[int, int, int, int]]) -> None:
        """Acknowledge inbound messages, given as (message id, qos, session, …), in the
        order they arrived. Those of an earlier connection are skipped: the broker sends
        them again on this one, and their ids may name other messages now."""
        current = [(mid, qos) for mid, qos, session, _ in acks
                   if qos > 0 and session == self.session]
        if any(qos == 2 for _, qos in current):  # never subscribed so: paho's own path
            for mid, qos in current:
                self.client.ack(mid, qos)
        else:
            self.client.ack_many(mid for mid, _ in current)

    # --- network thread callbacks ---

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int,
                        reason_code: Any, properties: Any) -> None:
        self._acked += 1
        if self._window_waiting and self._loop is not None:
            self._window_waiting = False
            self._loop.call_soon_threadsafe(self._wake_window)

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any,
                        reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"refused: {reason_code}"
            log.warning("mqtt.connect.refused", client_id=self.options.client_id,
                        broker=self.broker, reason=str(reason_code))
            return
        self._failures = 0
        self.session += 1
        self.last_error = None
        mids: list[int] | None = None
        try:
            if self._on_connect_cb is not None:
                mids = self._on_connect_cb(client, bool(flags.session_present))
        except Exception:  # a bug in a callback must not kill the network thread
            log.exception("mqtt.on_connect.error", client_id=self.options.client_id)
        self._awaiting_suback = set(mids or ())
        if not self._awaiting_suback:
            self._post_connected(True)

    def _handle_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                          reason_codes: Any, properties: Any) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("mqtt.subscribe.refused", client_id=self.options.client_id,
                          reason=str(code))
        if mid in self._awaiting_suback:
            self._awaiting_suback.discard(mid)
            if not self._awaiting_suback:
                self._post_connected(True)

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                           reason_code: Any, properties: Any) -> None:
        self._post_connected(False)
        if not self._stopping.is_set():
            log.warning("mqtt.disconnected", client_id=self.options.client_id,
                        reason=str(reason_code))
            self._jitter()

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the cause is the exception in hand.
        cause = sys.exc_info()[1]
        self.last_error = str(cause) if cause is not None else "connection failed"
        log.warning("mqtt.unreachable", client_id=self.options.client_id, broker=self.broker,
                    error=self.last_error, attempt=self._failures + 1)
        self._jitter()

    def _jitter(self) -> None:
        """Random extra wait (up to the current back-off) before paho's own capped wait."""
        base = min(self.options.reconnect_max,
                   self.options.reconnect_min * (2 ** min(self._failures, 20)))
        self._failures += 1
        self._stopping.wait(self._rng.uniform(0, base))

    def _post_connected(self, value: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed while reconnecting
                loop.call_soon_threadsafe(self._set_connected, value)

    def _set_connected(self, value: bool) -> None:
        if value == self._connected:
            return
        self._connected = value
        if self._connected_event is not None:
            if value:
                self._connected_event.set()
            else:
                self._connected_event.clear()
        if self._on_connected_change is not None:
            self._on_connected_change(value)
