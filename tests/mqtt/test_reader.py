"""paho with buffered reads and batched PUBACKs (`mqtt/reader.py`): on a socket pair, and
against a real Mosquitto with the shipped configuration."""

from __future__ import annotations

import gc
import socket
import struct
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from fleetwave.mqtt.reader import BufferedSocket, Client
from tests.support.broker import RunningBroker


def test_small_reads_are_served_from_one_large_read_in_order() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    reader = BufferedSocket(a)
    b.sendall(b"\x30\x05hello\x30\x03abc")
    assert reader.recv(1) == b"\x30"
    assert reader.pending() == 11  # the rest is held here, not in the kernel
    assert reader.recv(1) == b"\x05"
    assert reader.recv(5) == b"hello"
    assert reader.recv(10) == b"\x30\x03abc"  # never more than asked, never past the end
    assert reader.pending() == 0
    with pytest.raises(BlockingIOError):
        reader.recv(1)
    b.close()
    assert reader.recv(1) == b""  # end of stream reaches paho as it would
    reader.close()


def publish_packet(topic: bytes, payload: bytes, qos: int, mid: int,
                   properties: bytes = b"\x00") -> bytes:
    """A PUBLISH's variable header and payload as paho holds it (after the fixed header)."""
    return (struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
            + properties + payload)


def receiving(cls: type[paho.Client] = Client, manual_ack: bool = True
              ) -> tuple[paho.Client, list[paho.MQTTMessage]]:
    """A client, not connected, that keeps every message handed to `on_message`."""
    got: list[paho.MQTTMessage] = []
    c = cls(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack)
    c.on_message = lambda cl, u, msg: got.append(msg)
    return c, got


def handled(c: paho.Client, packet: bytes, header: int = 0x32, times: int = 1) -> None:
    """Feed `c` a PUBLISH as paho's reader leaves it: fixed header byte, then the rest."""
    for _ in range(times):
        c._in_packet["command"] = header
        c._in_packet["packet"] = packet
        c._handle_publish()


@pytest.mark.parametrize(("header", "packet"), [
    (0x30, publish_packet(b"iot/device/d1/agent/state", b'{"versions":{}}', 0, 0)),
    (0x33, publish_packet(b"iot/device/d1/agent/state", b'{"a":1}', 1, 7)),  # retained
    (0x3A, publish_packet(b"iot/device/d1/agent/status", b"", 1, 65535)),  # dup, empty
    # a User-Property (0x26): paho's own path, so its Properties come through
    (0x32, publish_packet(b"t", b"x", 1, 9, b"\x07\x26\x00\x01k\x00\x01v")),
    (0x34, publish_packet(b"t", b"x", 2, 9)),  # QoS 2: paho's own path
])
def test_a_publish_decodes_as_paho_decodes_it(header: int, packet: bytes) -> None:
    """The short path of `Client._handle_publish` against paho's own, field by field."""
    (ours, mine), (theirs, paho_s) = receiving(Client), receiving(paho.Client)
    handled(ours, packet, header)
    handled(theirs, packet, header)
    assert len(mine) == len(paho_s) == (0 if header & 0x06 == 0x04 else 1)  # QoS 2 waits
    for a, b in zip(mine, paho_s, strict=True):
        for field in ("mid", "topic", "payload", "qos", "retain", "dup"):
            assert getattr(a, field) == getattr(b, field), field
        assert (str(a.properties) if a.properties is not None else "[]") == str(b.properties)


@pytest.mark.parametrize("packet", [
    struct.pack("!H", 50) + b"abc",  # a topic longer than the packet
    struct.pack("!H", 1) + b"t" + struct.pack("!H", 3),  # no property length
    b"\x00\x01",  # shorter than any PUBLISH
])
def test_a_malformed_publish_is_refused_as_paho_refuses_it(packet: bytes) -> None:
    """A broken packet: the short path hands it to paho, which refuses it; no message
    reaches the link."""
    for cls in (Client, paho.Client):
        c, got = receiving(cls)
        with pytest.raises(MalformedPacket):
            handled(c, packet)
        assert got == [], cls


def test_a_topic_that_is_not_utf8_reaches_the_link_as_paho_delivers_it() -> None:
    """The link drops it (`unknown_topic`); here only that both paths deliver the same."""
    delivered = []
    for cls in (Client, paho.Client):
        c, got = receiving(cls)
        handled(c, publish_packet(b"\xff\xfe", b"x", 1, 3))
        (msg,) = got
        with pytest.raises(UnicodeDecodeError):
            msg.topic  # noqa: B018 - the property is what raises
        delivered.append((msg.mid, msg.payload, msg.qos))
    assert delivered[0] == delivered[1] == (3, b"x", 1)


def test_a_message_leaves_no_reference_cycle_behind() -> None:
    """paho matches each message against per-topic callbacks with a recursive closure, a
    cycle per message for the garbage collector; with none registered, nothing is matched."""
    c, got = receiving()
    packet = publish_packet(b"iot/device/d1/agent/state", b"{}", 1, 1)
    gc.collect()
    gc.disable()
    try:
        handled(c, packet, times=200)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert len(got) == 200
    assert unreachable < 20  # paho's own path leaves 4 objects per message


def test_per_topic_callbacks_still_get_their_messages() -> None:
    c, default = receiving()
    per_topic: list[paho.MQTTMessage] = []
    c.message_callback_add("iot/+/special", lambda cl, u, msg: per_topic.append(msg))
    handled(c, publish_packet(b"iot/a/special", b"{}", 1, 1))
    handled(c, publish_packet(b"iot/a/other", b"{}", 1, 2))
    assert ([m.topic for m in default], [m.topic for m in per_topic]) \
        == (["iot/a/other"], ["iot/a/special"])


def test_a_failing_callback_is_raised_as_paho_raises_it() -> None:
    c, _ = receiving(manual_ack=False)

    def broken(cl: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        raise ValueError("callback bug")

    c.on_message = broken
    with pytest.raises(ValueError, match="callback bug"):
        handled(c, publish_packet(b"t", b"x", 1, 1))
    c.suppress_exceptions = True
    handled(c, publish_packet(b"t", b"x", 1, 2))  # logged, not raised


def client(broker: RunningBroker, client_id: str, cls: type[paho.Client] = Client,
           account: tuple[str, str] | None = None, **kwargs: bool) -> paho.Client:
    c = cls(CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5, **kwargs)
    user, password = account or broker.controller
    c.username_pw_set(user, password)
    return c


def test_a_burst_arrives_whole_and_its_batched_acks_end_the_redelivery(
        broker: RunningBroker) -> None:
    """The last messages of a burst sit in the buffer, not the kernel: they must arrive
    without more traffic (the keep-alive is 60 s). Then one `ack_many` for all of them: the
    broker must not send them again to the same persistent session."""
    n = 3000
    publisher = client(broker, "reader-pub", paho.Client, broker.simulator)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    for i in range(n):
        publisher.publish(f"iot/device/d{i:05d}/agent/state", b'{"versions":{}}', qos=1,
                          retain=True).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    got: list[int] = []
    done = threading.Event()
    sub = client(broker, "reader-sub", manual_ack=True)
    assert isinstance(sub, Client)

    def on_message(cl: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        got.append(msg.mid)
        if len(got) % 250 == 0:  # the broker sends 1,000 at most before their PUBACKs
            sub.ack_many(got[-250:])
        if len(got) == n:
            done.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port, keepalive=60, clean_start=False,
                properties=_expiry())
    sub.subscribe("iot/device/+/agent/state", qos=1)
    sub.loop_start()
    assert done.wait(15), f"{len(got)} of {n}: the end of a burst waited for more traffic"
    sub.ack_many(got[n - n % 250:])
    time.sleep(0.5)  # paho's thread writes them
    sub.disconnect()
    sub.loop_stop()

    # The same session again, without subscribing: whatever was not acknowledged is sent
    # again now (flagged dup); what was acknowledged is not.
    again: list[int] = []
    sub = client(broker, "reader-sub", manual_ack=True)
    sub.on_message = lambda cl, u, msg: again.append(msg.mid)
    sub.connect("127.0.0.1", broker.port, clean_start=False, properties=_expiry())
    sub.loop_start()
    time.sleep(1.0)
    sub.disconnect()
    sub.loop_stop()
    assert again == []


def _expiry() -> paho.Properties:
    from paho.mqtt.packettypes import PacketTypes
    props = paho.Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    return props
