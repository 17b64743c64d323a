"""The agent's MQTT connection: paho's network thread, a last will, reconnect with back-off.

A device's broker is often far away and sometimes gone; paho reconnects by itself with a
capped exponential back-off (1 s doubling to 60 s), every failure is logged with what the
broker said, and QoS 1 statuses published while the link is down wait in paho's queue.
On every (re)connect the agent subscribes to its command topic and announces itself
(`on_connected`): retained state, `online: true`, and its newest final status again.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetwave.agent.config import AgentConfig
from fleetwave.protocol import reports
from fleetwave.protocol.topics import Topics

log = logging.getLogger(__name__)

RECONNECT_MIN = 1
RECONNECT_MAX = 60


class DeviceLink:
    def __init__(self, config: AgentConfig, topics: Topics, *,
                 on_command: Callable[[bytes], None],
                 on_connected: Callable[[], None]) -> None:
        self.config = config
        self.topics = topics
        self._on_command = on_command
        self._on_connected = on_connected
        self.connected = threading.Event()
        broker = config.broker
        client = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"fleetwave-agent-{config.device}"[:64],
                             protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(topics.online(config.device), reports.encode(reports.online_body(False)),
                        qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.max_queued_messages_set(1000)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self.client = client

    def start(self) -> None:
        broker = self.config.broker
        log.info("connecting to %s:%d as %s", broker.host, broker.port, self.config.device)
        self.client.connect_async(broker.host, broker.port, keepalive=broker.keepalive)
        self.client.loop_start()

    def publish(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        info = self.client.publish(topic, reports.encode(body), qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("publish to %s refused by paho: %s", topic, paho.error_string(info.rc))

    def stop(self, timeout: float = 5.0) -> None:
        """Say `online: false` (a clean disconnect sends no last will) and disconnect."""
        if self.connected.is_set():
            info = self.client.publish(self.topics.online(self.config.device),
                                       reports.encode(reports.online_body(False,
                                                                          _now_ms())),
                                       qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any,
                        reason: Any, properties: Any = None) -> None:
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s; retrying with back-off",
                        self.config.broker.host, self.config.broker.port, reason)
            return
        log.info("connected to the broker")
        client.subscribe(self.topics.update(self.config.device), qos=1)
        self._on_connected()
        client.publish(self.topics.online(self.config.device),
                       reports.encode(reports.online_body(True, _now_ms())), qos=1,
                       retain=True)
        self.connected.set()

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("cannot reach broker %s:%d; retrying with back-off (at most %d s)",
                    self.config.broker.host, self.config.broker.port, RECONNECT_MAX)

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                           reason: Any, properties: Any = None) -> None:
        self.connected.clear()
        log.warning("disconnected from the broker: %s", reason)

    def _handle_message(self, client: paho.Client, userdata: Any,
                        message: paho.MQTTMessage) -> None:
        try:
            self._on_command(bytes(message.payload))
        except Exception:  # the network thread must survive any command
            log.exception("command handling failed")


def _now_ms() -> int:
    return int(time.time() * 1000)
