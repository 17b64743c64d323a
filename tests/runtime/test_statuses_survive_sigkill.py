"""A status the broker delivered is never lost: `fleetwave run` acknowledges an MQTT message
only after the store committed it (paho manual acks), so a controller killed with SIGKILL
right after statuses arrived gets the unacknowledged ones again from its persistent session.

Real processes throughout: Mosquitto with the shipped configuration, `fleetwave run` on
SQLite, and a paho client in the test speaking for the devices.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetwave.store import open_store
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, wait_until

pytestmark = pytest.mark.slow

DEVICES = 300
ROLLOUT = f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: acks}}
spec:
  component: agent
  version: "2.0.0"
  selector: {{}}
  strategy: {{steps: [{{percent: 100}}], maxInFlight: {DEVICES}}}
  health: {{ackTimeout: 600s, updateTimeout: 600s, stableFor: 0s}}
  failurePolicy: {{maxFailurePercent: 50, minSample: 10, retries: 0}}
"""


class Devices:
    """One paho connection speaking for every device: retained state, commands, statuses."""

    def __init__(self, broker: RunningBroker) -> None:
        self.commands: dict[str, str] = {}
        self.lock = threading.Lock()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="acks-devices",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(*broker.simulator)
        client.on_message = self.on_message
        client.connect(broker.host, broker.port)
        client.subscribe("iot/device/+/agent/update", qos=1)
        client.loop_start()
        self.client = client
        self.uuids = [f"acks-{i:04d}" for i in range(DEVICES)]

    def on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.payload:
            body = json.loads(msg.payload)
            with self.lock:
                self.commands[msg.topic.split("/")[2]] = body["correlation_id"]

    def publish_all(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """Publish with QoS 1 and return once the broker acknowledged every message."""
        infos = [self.client.publish(topic, payload, qos=1, retain=retain)
                 for topic, payload, retain in messages]
        for info in infos:
            info.wait_for_publish(30)

    def states(self, version: str) -> list[tuple[str, bytes, bool]]:
        return [(f"iot/device/{uuid}/agent/state", json.dumps({
            "uuid": uuid, "versions": {"agent": version}, "labels": {},
            "timestamp": int(time.time() * 1000)}).encode(), True) for uuid in self.uuids]

    def statuses(self) -> list[tuple[str, bytes, bool]]:
        out = []
        now = int(time.time() * 1000)
        for uuid in self.uuids:
            cid = self.commands[uuid]
            for kind in ("update_command_received", "update_started", "update_succeeded"):
                body = {"type": kind, "correlation_id": cid, "timestamp": now,
                        "version": "2.0.0"}
                out.append((f"iot/device/{uuid}/agent/status", json.dumps(body).encode(),
                            False))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored(store_url: str) -> dict[str, tuple[str, bool, bool]]:
    """device -> (state, acknowledged, started) of its record, read from the store."""
    async def load() -> dict[str, tuple[str, bool, bool]]:
        store = open_store(store_url)
        try:
            records = await store.updates.of_rollout("acks")
        finally:
            await store.close()
        return {r.device: (r.state.value, r.acknowledged_at is not None,
                           r.started_at is not None) for r in records}
    return asyncio.run(load())


def test_statuses_received_before_a_sigkill_are_all_stored_after_restart(
        tmp_path: Path, broker: RunningBroker,
        controller_factory: Callable[..., Controller]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    devices = Devices(broker)
    try:
        devices.publish_all(devices.states("1.0.0"))
        controller = controller_factory(source)
        controller.start()
        wait_until(lambda: len(controller.devices()) == DEVICES, 30, "devices not known")
        (source / "acks.yaml").write_text(ROLLOUT)
        wait_until(lambda: len(devices.commands) == DEVICES, 60,
                   lambda: f"{len(devices.commands)} commands; {controller.tail()}")
        wait_until(lambda: len(stored(controller.store)) == DEVICES, 30, "records not stored")

        # the broker holds every status (and the new retained state) once this returns
        devices.publish_all(devices.statuses() + devices.states("2.0.0"))
        controller.kill()  # SIGKILL, mid-ingest of those statuses

        restarted = controller_factory(source, store=controller.store, port=controller.port)
        restarted.start()
        expected = dict.fromkeys(devices.uuids, ("succeeded", True, True))
        wait_until(lambda: stored(restarted.store) == expected, 60,
                   lambda: f"not every status stored: "
                           f"{sorted(set(stored(restarted.store).values()))}")
    finally:
        devices.close()
