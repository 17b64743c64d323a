"""The shipped ACL and configuration with real per-device accounts on a real Mosquitto: a
device reaches only its own topics, and cannot take over the controller's session."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetwave.mqtt.broker import BrokerConfig, MosquittoProcess, free_port
from fleetwave.protocol.topics import Topics
from tests.support.broker import CONTROLLER, DEVICES, SIMULATOR, RunningBroker

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


# -- client ids bound to user names -----------------------------------------------------

CONTROLLER_ID = "fleetwave-controller"  # what `fleetwave run` uses unless --client-id
REPLICA = ("fleetwave-replica-1", "replica-secret")


@dataclass
class Session:
    """A paho client with a persistent session whose CONNACK and disconnects are recorded."""

    user: str
    password: str
    client_id: str
    clean_start: bool = False
    connacks: list[bool] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    client: paho.Client | None = None

    def connect(self, port: int) -> None:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
        c.username_pw_set(self.user, self.password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=self.clean_start, properties=props)
        c.loop_start()
        self.client = c
        self.wait(lambda: self.connacks)

    def _on_connect(self, c: paho.Client, u: object, flags: paho.ConnectFlags,
                    code: paho.ReasonCode, p: object) -> None:
        with self.cond:
            self.connacks.append(flags.session_present)
            self.cond.notify_all()

    def _on_disconnect(self, c: paho.Client, u: object, flags: object, code: paho.ReasonCode,
                       p: object) -> None:
        with self.cond:
            self.disconnects.append(str(code))
            self.cond.notify_all()

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.received.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait(self, check: object, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check():  # type: ignore[operator]
                remaining = deadline - time.monotonic()
                assert remaining > 0, "timed out"
                self.cond.wait(remaining)

    def subscribe(self, topic: str) -> None:
        assert self.client is not None
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5.0)

    def publish(self, topic: str, payload: bytes) -> None:
        assert self.client is not None
        self.client.publish(topic, payload, qos=1).wait_for_publish(5.0)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[tuple[MosquittoProcess, BrokerConfig]]:
    """The shipped configuration as operators run it: real device accounts, a second
    controller replica with its own account, no simulator account (so client ids are bound
    to user names)."""
    config = BrokerConfig(port=free_port(), controller_user=CONTROLLER[0],
                          controller_password=CONTROLLER[1],
                          controller_replicas=dict([REPLICA]), devices=DEVICES)
    assert config.bind_client_ids
    process = MosquittoProcess(config.write(tmp_path / "broker"), config.port)
    process.start()
    try:
        yield process, config
    finally:
        process.stop()


def run_takeover(port: int, hijack_id: str, clean_start: bool) -> tuple[Session, Session]:
    """The controller holds a persistent session subscribed to status; then device A logs in
    with `hijack_id`, and afterwards publishes its own status (which the controller receives
    only if its session survived)."""
    controller = Session(*CONTROLLER, client_id=CONTROLLER_ID)
    controller.connect(port)
    controller.subscribe("iot/device/+/agent/status")
    device = Session(A, DEVICES[A], client_id=hijack_id, clean_start=clean_start)
    device.connect(port)
    device.publish(T.status(A), b"after-the-attempt")
    return controller, device


@pytest.mark.parametrize("clean_start", [False, True], ids=["resume", "wipe"])
@pytest.mark.parametrize("hijack_id", [CONTROLLER_ID, CONTROLLER[0]],
                         ids=["controllers-client-id", "controllers-user-name"])
def test_a_device_cannot_take_over_the_controllers_session(
        production_broker: tuple[MosquittoProcess, BrokerConfig], hijack_id: str,
        clean_start: bool) -> None:
    process, _ = production_broker
    controller, device = run_takeover(process.port, hijack_id, clean_start)
    try:
        controller.wait(lambda: (T.status(A), b"after-the-attempt") in controller.received)
        assert device.connacks == [False], "the device got a session of its own, not the "\
                                           "controller's"
        assert controller.disconnects == [], "the controller was never kicked off"
        assert controller.connacks == [False]
    finally:
        device.close()
        controller.close()


def test_without_the_binding_the_same_attempt_takes_the_session(tmp_path: Path) -> None:
    """The control: with the simulator account configured (tests and demo only) the binding
    is off, and the very same login does disconnect the controller and resume its session.
    This is the attack the shipped configuration prevents."""
    config = BrokerConfig(port=free_port(), controller_user=CONTROLLER[0],
                          controller_password=CONTROLLER[1], devices=DEVICES,
                          simulator_user=SIMULATOR[0], simulator_password=SIMULATOR[1])
    assert not config.bind_client_ids
    with MosquittoProcess(config.write(tmp_path / "broker"), config.port) as process:
        controller, device = run_takeover(process.port, CONTROLLER_ID, clean_start=False)
        try:
            controller.wait(lambda: controller.disconnects)
            assert device.connacks == [True], "the device resumed the controller's session"
        finally:
            device.close()
            controller.close()


def test_replicas_with_their_own_accounts_share_status(
        production_broker: tuple[MosquittoProcess, BrokerConfig]) -> None:
    """Two controller replicas configured with the same --client-id (the default) but their
    own accounts: the broker names their sessions after the accounts, both stay connected,
    and a shared subscription spreads the devices' status over them, none lost."""
    process, _ = production_broker
    shared = threading.Condition()  # either replica's message wakes the waiter
    replicas = [Session(*CONTROLLER, client_id=CONTROLLER_ID, cond=shared),
                Session(*REPLICA, client_id=CONTROLLER_ID, cond=shared)]
    device = Session(B, DEVICES[B], client_id="device-b")
    try:
        for replica in replicas:
            replica.connect(process.port)
            replica.subscribe("$share/fleetwave/iot/device/+/agent/status")
        device.connect(process.port)
        sent = [f"status-{i}".encode() for i in range(20)]
        for payload in sent:
            device.publish(T.status(B), payload)

        def all_arrived() -> bool:
            got = [p for r in replicas for _, p in r.received]
            return sorted(got) == sorted(sent)

        replicas[0].wait(all_arrived)
        assert all(r.received for r in replicas), "both replicas took a share"
        assert all(r.disconnects == [] for r in replicas)
    finally:
        for session in (device, *replicas):
            session.close()
