"""The shipped ACL with real per-device accounts: a device reaches only its own topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetwave.protocol.topics import Topics
from tests.support.broker import RunningBroker

T = Topics()
A, B = "device-a", "device-b"


class Client:
    """A blocking paho client that records what it receives and its SUBACK/PUBACK codes."""

    def __init__(self, broker: RunningBroker, user: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.suback: dict[int, list[bool]] = {}
        self.puback: dict[int, bool] = {}
        self._cond = threading.Condition()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.username_pw_set(user, password)
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        self.client = c

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, msg.payload))
            self._cond.notify_all()

    def _on_subscribe(self, c: paho.Client, u: object, mid: int, codes: list[paho.ReasonCode],
                      p: object) -> None:
        with self._cond:
            self.suback[mid] = [code.is_failure for code in codes]
            self._cond.notify_all()

    def _on_publish(self, c: paho.Client, u: object, mid: int, code: paho.ReasonCode,
                    p: object) -> None:
        with self._cond:
            self.puback[mid] = code.is_failure
            self._cond.notify_all()

    def _wait(self, check: object, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check():  # type: ignore[operator]
                remaining = deadline - time.monotonic()
                assert remaining > 0, "timed out"
                self._cond.wait(remaining)

    def subscribe(self, topic: str) -> bool:
        """True when the broker granted the subscription."""
        _, mid = self.client.subscribe(topic, qos=1)
        self._wait(lambda: mid in self.suback)
        return not any(self.suback[mid])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """True when the broker accepted the publish (PUBACK without an error code)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self._wait(lambda: info.mid in self.puback)
        return not self.puback[info.mid]

    def wait_for(self, topic: str, payload: bytes) -> None:
        self._wait(lambda: (topic, payload) in self.received)

    def topics_received(self) -> set[str]:
        with self._cond:
            return {t for t, _ in self.received}

    def close(self) -> None:
        self.client.disconnect()  # first, so the network thread leaves select() at once
        self.client.loop_stop()


@pytest.fixture
def clients(broker: RunningBroker) -> Iterator[tuple[Client, Client, Client]]:
    a = Client(broker, A, broker.devices[A])
    b = Client(broker, B, broker.devices[B])
    controller = Client(broker, *broker.controller)
    yield a, b, controller
    for c in (a, b, controller):
        c.close()


def test_device_cannot_read_another_devices_topics(
        clients: tuple[Client, Client, Client]) -> None:
    """Mosquitto 2.0 grants the SUBACK and enforces `read` at delivery: A may hold a
    subscription on B's topics, but nothing of B's (not even a retained command) reaches it."""
    a, b, controller = clients
    assert controller.publish(T.update(B), b"retained-for-b", retain=True)
    for topic in (T.update(B), T.status(B), T.state(B), T.online(B), "iot/device/+/agent/+",
                  "iot/device/#", "#"):
        a.subscribe(topic)
    assert a.subscribe(T.update(A))
    assert controller.subscribe(T.filter(T.parse(T.status(A))[0]))  # type: ignore[index]
    # B reports and gets another command; then A gets its own command (the positive control)
    assert b.publish(T.status(B), b'{"type": "update_started"}')
    assert b.publish(T.state(B), b'{"versions": {}}', retain=True)
    assert controller.publish(T.update(B), b'{"action": "update", "version": "2"}')
    controller.wait_for(T.status(B), b'{"type": "update_started"}')
    assert controller.publish(T.update(A), b"for-a")
    a.wait_for(T.update(A), b"for-a")
    assert a.topics_received() == {T.update(A)}


def test_device_cannot_publish_on_another_devices_topics(
        clients: tuple[Client, Client, Client]) -> None:
    a, _, controller = clients
    for kind in ("status", "state", "online"):
        assert controller.subscribe(f"iot/device/+/agent/{kind}")
    for topic in (T.status(B), T.state(B), T.online(B)):
        assert not a.publish(topic, b'{"forged": true}'), topic
    assert a.publish(T.status(A), b"own")  # positive control, sent after the forgeries
    controller.wait_for(T.status(A), b"own")
    assert controller.topics_received() == {T.status(A)}


def test_no_device_can_publish_a_command(clients: tuple[Client, Client, Client]) -> None:
    a, b, controller = clients
    assert b.subscribe(T.update(B))
    assert a.subscribe(T.update(A))
    assert not a.publish(T.update(B), b'{"action": "update", "version": "evil"}', retain=True)
    assert not a.publish(T.update(A), b'{"action": "update", "version": "evil"}', retain=True)
    assert controller.publish(T.update(B), b"genuine")
    b.wait_for(T.update(B), b"genuine")
    assert b.received == [(T.update(B), b"genuine")]
    assert a.received == []
