"""The controller's link against a real Mosquitto with the shipped configuration."""

from __future__ import annotations

import asyncio
import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetwave.metrics import Metrics
from fleetwave.mqtt import MqttLink
from fleetwave.mqtt.connection import ConnectionOptions, PahoConnection
from fleetwave.protocol.messages import Command, DeviceMessage, ReportedState, Status
from fleetwave.protocol.signing import SigningKey, TrustedKeys
from fleetwave.protocol.topics import Topics
from tests.mqtt.conftest import LINK_KEY, Collector, settings_for, until
from tests.support.broker import RunningBroker

T = Topics()
KEY = SigningKey.generate()


def raw_client(broker: RunningBroker, user: str, password: str,
               client_id: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


async def device_publisher(broker: RunningBroker, client_id: str = "sim-pub") -> PahoConnection:
    """The simulator's account, on fleetwave's own reconnecting connection."""
    user, password = broker.simulator
    conn = PahoConnection(ConnectionOptions(host="127.0.0.1", port=broker.port,
                                            client_id=client_id, username=user,
                                            password=password, clean_start=False,
                                            reconnect_min=0.1, reconnect_max=0.5),
                          on_message=lambda *a: None)
    await conn.start()
    async with asyncio.timeout(5):
        await conn.wait_connected()
    return conn


def status(cid: str, type_: str = "update_progress", **extra: object) -> bytes:
    return json.dumps({"type": type_, "correlation_id": cid, "percent": 50, **extra}).encode()


def cids(messages: list[DeviceMessage]) -> set[str]:
    return {m.correlation_id for m in messages
            if isinstance(m, Status) and m.correlation_id is not None}


async def test_statuses_arrive_in_batches(broker: RunningBroker,
                                          link: tuple[MqttLink, Collector]) -> None:
    _, collector = link
    pub = await device_publisher(broker)
    for i in range(2000):
        await pub.publish(T.status(f"dev-{i % 50}"), status(f"c{i}"))
    await collector.wait_for(lambda m: len(cids(m)) == 2000)
    assert max(collector.batches) <= 500
    assert len(collector.batches) < 200  # batched, not one hand-off per message
    await pub.stop()


async def test_each_malformed_kind_is_dropped_and_counted(
        broker: RunningBroker, link: tuple[MqttLink, Collector], metrics: Metrics) -> None:
    _, collector = link
    pub = await device_publisher(broker)
    await pub.publish(T.status("dev-1"), b"x" * 20000)
    await pub.publish(T.status("dev-1"), b"{not json")
    await pub.publish(T.status("dev-1"), b'{"type": "update_exploded"}')
    await pub.publish(T.state("dev-1"), b'{"uuid": "dev-2", "versions": {"agent": "1"}}')
    await pub.publish(T.status("dev-1"), b"\xff\xfe\x00garbage")
    await pub.publish(T.status("dev-1"), status("after-garbage"))  # the link still works
    await collector.wait_for(lambda m: "after-garbage" in cids(m))

    def dropped(reason: str) -> float | None:
        return metrics.registry.get_sample_value("fleetwave_mqtt_messages_dropped_total",
                                                 {"reason": reason})

    assert dropped("too_large") == 1
    assert dropped("invalid_json") == 2
    assert dropped("invalid_schema") == 1
    assert dropped("uuid_mismatch") == 1
    assert dropped("unknown_topic") == 0  # unreachable through our subscriptions: see parser
    assert [m for m in collector.messages if isinstance(m, ReportedState)] == []
    assert metrics.registry.get_sample_value("fleetwave_mqtt_messages_received_total",
                                             {"kind": "status"}) == 1
    await pub.stop()


async def test_the_broker_never_sends_a_packet_above_our_maximum_packet_size(
        broker: RunningBroker, link: tuple[MqttLink, Collector], metrics: Metrics) -> None:
    """The link's CONNECT carries MQTT 5 Maximum-Packet-Size (max_payload + 4 KiB): the
    broker accepts a 100 KB message from the device (its own limit is 256 KiB) but never
    forwards it, so the network thread does not even read it; a message just above
    max_payload still arrives and is counted as too_large."""
    _, collector = link
    pub = await device_publisher(broker)
    await pub.publish(T.status("dev-1"), b"x" * 100_000)
    await pub.publish(T.status("dev-1"), b"y" * 20_000)
    await pub.publish(T.status("dev-1"), status("after-huge"))
    await collector.wait_for(lambda m: "after-huge" in cids(m))
    assert metrics.registry.get_sample_value("fleetwave_mqtt_messages_dropped_total",
                                             {"reason": "too_large"}) == 1
    assert link[0]._options.max_packet_size == 16384 + 4096
    await pub.stop()


async def test_status_sent_while_controller_down_arrives_on_reconnect(
        broker: RunningBroker, metrics: Metrics) -> None:
    settings = settings_for(broker, client_id="fleetwave-persistent")
    first = Collector()
    async with MqttLink(settings, metrics, first, signing_key=KEY) as link:
        async with asyncio.timeout(5):
            await link.wait_connected()
    assert metrics.registry.get_sample_value("fleetwave_mqtt_connected") == 0
    pub = await device_publisher(broker)
    for i in range(500):
        await pub.publish(T.status(f"dev-{i}"), status(f"while-down-{i}", "update_succeeded",
                                                       version="1.0.6"))
    async with asyncio.timeout(10):
        await pub.flush()
    await pub.stop()
    second = Collector()
    async with MqttLink(settings, metrics, second, signing_key=KEY) as link:
        await second.wait_for(lambda m: len(cids(m)) == 500)
        assert {m.device for m in second.messages if isinstance(m, Status)} == \
            {f"dev-{i}" for i in range(500)}
    assert first.messages == []


async def test_broker_restart_mid_stream_loses_no_qos1_message(
        broker: RunningBroker, metrics: Metrics) -> None:
    collector = Collector()
    total = 3000
    async with MqttLink(settings_for(broker, client_id="fleetwave-restart"), metrics,
                        collector, signing_key=KEY) as link:
        async with asyncio.timeout(5):
            await link.wait_connected()
        pub = await device_publisher(broker, "sim-restart")
        for i in range(total):
            await pub.publish(T.status(f"dev-{i % 100}"), status(f"seq-{i}"))
            if i == total // 2:
                await asyncio.to_thread(broker.restart)
            if i % 100 == 0:
                await asyncio.sleep(0.005)  # a stream, not one burst
        await collector.wait_for(lambda m: len(cids(m)) == total, within=30)
        assert link.connected
        assert metrics.registry.get_sample_value("fleetwave_mqtt_connected") == 1
        await pub.stop()


async def test_commands_are_retained_and_cleared(
        broker: RunningBroker, link: tuple[MqttLink, Collector], metrics: Metrics) -> None:
    controller, _ = link
    count = 3000  # beyond the window of 1,000: none may be lost
    for i in range(count):
        await controller.publish_command(f"dev-{i}", Command(
            action="update", component="agent", version="1.0.6", correlation_id=f"c{i}",
            timestamp=1, device=f"dev-{i}", release=i + 1, expires_at="2999-01-01T00:00:00Z"))
    await controller.clear_command("dev-0")
    async with asyncio.timeout(10):
        await controller.flush()
    assert controller.unacknowledged == 0

    received: dict[str, bytes] = {}
    user, password = broker.simulator
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="retained-check",
                      protocol=MQTTProtocolVersion.MQTTv5)
    sub.username_pw_set(user, password)
    sub.on_message = lambda c, u, msg: received.__setitem__(msg.topic, msg.payload)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(T.filter(T.parse(T.update("x"))[0]), qos=1)  # type: ignore[index]
    sub.loop_start()
    try:
        await until(lambda: len(received) >= count - 1)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert T.update("dev-0") not in received
    assert json.loads(received[T.update("dev-2999")])["correlation_id"] == "c2999"
    trusted = TrustedKeys([LINK_KEY.public])
    assert {trusted.verify(json.loads(p)) for p in received.values()} == {LINK_KEY.public.keyid}
    assert metrics.registry.get_sample_value("fleetwave_mqtt_messages_published_total",
                                             {"kind": "update"}) == count
    assert metrics.registry.get_sample_value("fleetwave_mqtt_messages_published_total",
                                             {"kind": "clear"}) == 1


async def test_retained_state_resynchronises_on_start(
        broker: RunningBroker, metrics: Metrics) -> None:
    user, password = broker.simulator
    dev = raw_client(broker, user, password, "state-writer")
    for i in range(20):
        dev.publish(T.state(f"dev-{i}"), json.dumps({"versions": {"agent": "1.0.5"}}),
                    qos=1, retain=True).wait_for_publish(5)
    dev.loop_stop()
    dev.disconnect()
    collector = Collector()
    async with MqttLink(settings_for(broker, client_id="fresh"), metrics, collector,
                        signing_key=KEY):
        await collector.wait_for(
            lambda m: len({x.device for x in m if isinstance(x, ReportedState)}) == 20)


async def test_reconnects_after_broker_outage(broker: RunningBroker,
                                              link: tuple[MqttLink, Collector],
                                              metrics: Metrics) -> None:
    controller, _ = link
    await asyncio.to_thread(broker.stop)
    await until(lambda: not controller.connected, within=5)
    assert metrics.registry.get_sample_value("fleetwave_mqtt_connected") == 0
    await asyncio.sleep(1.0)  # a few failed attempts (back-off with jitter)
    await asyncio.to_thread(broker.start)
    async with asyncio.timeout(10):
        await controller.wait_connected()
    assert metrics.registry.get_sample_value("fleetwave_mqtt_connected") == 1


@pytest.mark.parametrize("fields", [
    pytest.param({"device": "dev-1", "release": None}, id="no-release"),
    pytest.param({"device": "dev-1", "expires_at": None}, id="no-expiry"),
    pytest.param({"device": "dev-2"}, id="for-another-device"),
])
async def test_a_command_not_bound_to_its_device_and_attempt_is_never_published(
        link: tuple[MqttLink, Collector], metrics: Metrics, fields: dict[str, object]) -> None:
    controller, _ = link
    base = {"action": "update", "component": "agent", "version": "1.0.6",
            "correlation_id": "c", "timestamp": 1, "release": 1,
            "expires_at": "2999-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="dev-1"):
        await controller.publish_command("dev-1", Command(**{**base, **fields}))  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("fleetwave_mqtt_messages_published_total",
                                             {"kind": "update"}) is None
