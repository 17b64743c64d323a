"""paho's client with buffered socket reads and batched acknowledgements.

paho 2 reads a packet with three or more `recv` calls (its first byte, each byte of its
length, then the rest) and goes back to `select()` after each packet, so a 100-byte
message costs four system calls before it is parsed; it sends each PUBACK as a packet of
its own, one `send` and one wake-up write to its socket pair each. At start-up the
controller receives every device's retained state and liveness, 200,000 messages for
100,000 devices. A bare subscriber to bench/fleet.py's 100,000 retained states took 5.3 s
of CPU with plain paho and 3.2 s with this client; `fleetwave run`'s start-up in
bench/rollout.py went from 25 s to 15 s (bench/README.md).

- `BufferedSocket` serves paho's small reads from one large `recv` and reports what it
  holds through `pending()`, the hook paho's loop already has for TLS: with bytes
  buffered, the loop polls instead of waiting in `select()`, so a message that arrived
  in the same read as the one before is never left waiting for more traffic.
- `Client.loop_read` goes on reading while whole packets are buffered (bounded, so
  writes and keep-alives still get their turn).
- `Client._handle_publish` decodes a QoS 0 or 1 PUBLISH without MQTT 5 properties (every
  device message) without building paho's `Properties` object, half of what paho spent
  per message after the reads were buffered; anything else takes paho's own path.
- `Client._handle_on_message` hands a message straight to `on_message` while no
  per-topic callback is registered: paho matches every message against those with a
  recursive closure, a reference cycle per message that the garbage collector then has
  to find (20,000 of them in 5 s at the fast fleet's rate).
- `Client.ack_many` queues the PUBACKs of a batch as one write.

Only paho's documented behaviour is relied on, except three of its methods
(`_create_socket`, `_handle_publish`, `_handle_on_message`, `_packet_queue`), overridden
or called here; the
paho version is pinned below 3 and tests/mqtt/test_reader.py runs them on a real broker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

_READ = 65536
_READS_PER_LOOP = 1000
"""Packets read from the buffer before paho's loop gets back to writes and keep-alives."""
_PUBACK = 0x40
_U16 = struct.Struct("!H")


class BufferedSocket:
    """A socket whose `recv` is served from one large read of the real one."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: paho.SocketLike) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(max(n, _READ))  # BlockingIOError etc. reach paho as before
            if len(buf) <= n:
                self._buf, self._pos = b"", 0
                return buf
            pos = 0
        out = buf[pos:pos + n]
        self._buf, self._pos = buf, pos + len(out)
        return out

    def pending(self) -> int:
        """Bytes readable without waiting: buffered here, and inside TLS."""
        inner = getattr(self._sock, "pending", None)  # ssl.SSLSocket's; a plain one has none
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)


class Client(paho.Client):
    """`paho.Client`, reading through a `BufferedSocket`."""

    _per_topic = False
    """Whether `message_callback_add` was ever called (then paho dispatches)."""

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(_READS_PER_LOOP):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket) \
                    or sock.pending() == 0:
                break
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        packet: bytes | bytearray = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if self._protocol != MQTTProtocolVersion.MQTTv5 or qos > 1 or len(packet) < 3:
            return super()._handle_publish()
        (length,) = _U16.unpack_from(packet)
        at = 2 + length + (2 if qos else 0)
        if len(packet) <= at or packet[at] != 0:  # properties (or malformed): paho's path
            return super()._handle_publish()
        message = paho.MQTTMessage(_U16.unpack_from(packet, at - 2)[0] if qos else 0,
                                   bytes(packet[2:2 + length]))
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = packet[at + 1:]
        message.timestamp = paho.time_func()
        self._handle_on_message(message)
        if qos and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: paho.CallbackOnMessage) -> None:
        self._per_topic = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        if self._per_topic:
            super()._handle_on_message(message)
            return
        with self._callback_mutex:
            on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:  # as paho: a failing callback is logged, or raised
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK each of `mids` (QoS 1 messages received with `manual_ack`), in one write."""
        packet = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
        if not packet:
            return
        queue = getattr(self, "_packet_queue", None)
        if queue is None:  # another paho: its own path, one packet each
            for (mid,) in struct.iter_unpack("!xxH", packet):
                self.ack(mid, 1)
            return
        queue(_PUBACK, packet, 0, 0)
