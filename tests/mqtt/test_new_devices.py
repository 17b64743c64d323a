"""`--max-new-devices-per-minute` on a real `fleetwave run` behind a real Mosquitto.

An account that may write every device's topics (here the simulator's) invents 30
device ids against a cap of 1 a minute (a burst of 10): 10 become known, 20 are
refused and counted, and a known device is never held back. After a restart the
fresh subscription redelivers the refused devices' retained state, which is how a
refused device gets in later without doing anything itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.metrics.scrape import scrape
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, wait_until

pytestmark = pytest.mark.slow


def publish_states(broker: RunningBroker, states: dict[str, str]) -> None:
    """Retained `state` messages, uuid -> agent version, as the simulator account."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-inventor")
    client.username_pw_set(*broker.simulator)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for uuid, version in states.items():
            client.publish(f"iot/device/{uuid}/agent/state",
                           json.dumps({"uuid": uuid, "versions": {"agent": version}}),
                           qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def refused(controller: Controller) -> float | None:
    return scrape(controller.url).value("fleetwave_mqtt_messages_dropped_total",
                                        reason="new_device_rate")


def test_new_device_ids_are_capped_and_known_devices_pass(
        tmp_path: Path, broker: RunningBroker,
        controller_factory: Callable[..., Controller]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    controller = controller_factory(source, extra_args=("--max-new-devices-per-minute", "1"))
    controller.start()
    publish_states(broker, {f"invented-{i:02d}": "1.0.0" for i in range(30)})
    wait_until(lambda: refused(controller) == 20, 20,
               lambda: f"refused {refused(controller)}\n{controller.tail()}")
    known = {d["uuid"] for d in controller.devices()}
    assert len(known) == 10

    # A known device is not held back although the bucket is empty.
    one = sorted(known)[0]
    publish_states(broker, {one: "2.0.0"})
    wait_until(lambda: controller.get(f"/api/v1/devices/{one}")["versions"] == {"agent": "2.0.0"},
               10, controller.tail)
    assert refused(controller) == 20

    # A restart subscribes afresh: the broker redelivers every retained state, the
    # 10 known devices pass, and a full bucket lets 10 of the refused ones in.
    controller.stop()
    controller.start()
    wait_until(lambda: len(controller.devices()) == 20, 20,
               lambda: f"{len(controller.devices())} devices\n{controller.tail()}")
    assert known < {d["uuid"] for d in controller.devices()}
