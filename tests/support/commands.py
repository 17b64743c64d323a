"""Commands as a test (or an attacker on the broker) writes them, and a raw MQTT client that
publishes them and collects what others publish.

`forge` builds the same JSON the controller sends (`Command.to_body`) and signs it with
whatever key it is given, so a test can send a well-formed command that is wrong in one
way only: another key, past its expiry, another device, an old release, a lower version.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetwave.protocol.admission import format_time
from fleetwave.protocol.messages import Command, CommandAction
from fleetwave.protocol.signing import SigningKey
from tests.support.broker import RunningBroker


def forge(key: SigningKey | None, device: str, *, release: int, version: str = "1.0.6",
          action: CommandAction = "update", component: str = "agent", cid: str = "forged",
          expires_in: float = 300.0, **fields: Any) -> bytes:
    """A command for `device`, signed by `key` (None: unsigned)."""
    now = time.time()
    body = Command(action=action, component=component, version=version, correlation_id=cid,
                   timestamp=int(now * 1000), device=device, release=release,
                   expires_at=format_time(now + expires_in), **fields).to_body()
    return json.dumps(key.sign(body) if key is not None else body).encode()


class BrokerClient:
    """A paho client on its own thread: `publish` and wait, and every message of the
    subscribed filters kept as (topic, payload, retained)."""

    def __init__(self, broker: RunningBroker, account: tuple[str, str], client_id: str,
                 *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=MQTTProtocolVersion.MQTTv5)
        self._client.username_pw_set(*account)
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        for topic in filters:
            self._client.subscribe(topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def received(self, where: Callable[[str, bytes], bool] = lambda t, p: True
                 ) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p, _ in self.messages if where(t, p)]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
