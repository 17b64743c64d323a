"""The operator around the real Engine: SQLite store, a real Mosquitto, CRs in the emulator.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py`) stands in at the
HTTP boundary; it does not emulate schema validation, defaulting or RBAC. The
store is a real SQLite file and the broker a real Mosquitto (tests/support).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fleetwave.metrics import build_metrics
from fleetwave.mqtt.link import MqttLink
from fleetwave.mqtt.settings import MqttSettings
from fleetwave.protocol.signing import SigningKey
from fleetwave.runtime.engine import Engine, EngineHooks, Observed
from fleetwave.store import open_store
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import ROLLOUTS, eventually, kubectl, rollout, sent
from tests.support.broker import RunningBroker

BASE = ROLLOUTS.format(ns="fleet")


@pytest.fixture
async def engine(tmp_path: Path, broker: RunningBroker) -> AsyncIterator[Engine]:
    store = open_store(f"sqlite:///{tmp_path / 'fleetwave.db'}")
    await store.migrate()
    metrics = build_metrics()
    user, password = broker.controller

    observed = Observed(store, metrics)
    link = MqttLink(MqttSettings(url=broker.url, username=user, password=password,
                                 client_id="fleetwave-operator-test", reconnect_min=0.1,
                                 reconnect_max=0.5), metrics, observed.on_device_messages,
                    signing_key=SigningKey.generate())
    engine = Engine(store, link, metrics, resync_interval=0.5, observed=observed,
                    hooks=EngineHooks(broker_connected=lambda: link.connected))
    await link.start()
    try:
        yield engine
    finally:
        await link.stop()
        await store.close()


async def _device_reports(broker: RunningBroker, uuid: str, version: str) -> None:
    password = broker.devices[uuid]
    async with aiomqtt.Client(broker.host, broker.port, username=uuid, password=password,
                              identifier=f"{uuid}-test") as client:
        await client.publish(f"iot/device/{uuid}/agent/state", json.dumps({
            "uuid": uuid, "versions": {"agent": version}, "labels": {"device_type": "rpi4"},
            "deployment_type": "systemd", "timestamp": int(time.time() * 1000)}),
            qos=1, retain=True)


async def test_real_engine_plans_a_cr_and_its_status_lands_on_the_cr(
        apiserver: ApiServer, operators: Any, engine: Engine, broker: RunningBroker) -> None:
    await _device_reports(broker, "device-a", "1.0.5")
    await eventually(lambda: engine.fleet.devices.get("device-a") is not None, timeout=10,
                     message="device known to the engine")
    op = await operators(engine)
    status, created = await kubectl(apiserver, "POST", BASE,
                                    rollout("agent-1-0-6",
                                            strategy={"steps": [{"percent": 100}]}),
                                    "application/json")
    assert status in (200, 201)

    def stored_status() -> dict[str, Any]:
        raw = apiserver.objects["fleetwave.io/v1alpha1/rollouts", "fleet", "agent-1-0-6"].raw
        return dict(raw.get("status") or {})

    await eventually(lambda: op.runtime.leading and stored_status().get("targeted") == 1,
                     timeout=15, message="status with one targeted device")
    st = stored_status()
    assert st["observedGeneration"] == 1
    assert st["revision"] == created["metadata"]["resourceVersion"]
    assert st["phase"] in ("Progressing", "Pending")
    assert any(c["type"] for c in st.get("conditions", []))
    patches = [r for r in apiserver if r.method == "PATCH" and "/status" in r.url.path]
    assert patches and all(r.url.path == f"{BASE}/agent-1-0-6/status" for r in patches)
    assert all(set(sent(r)) == {"status"} for r in patches)

    # The leader's engine commanded the device over the real broker (a retained command).
    async with aiomqtt.Client(broker.host, broker.port, username="device-a",
                              password=broker.devices["device-a"],
                              identifier="device-a-reader") as device:
        await device.subscribe("iot/device/device-a/agent/update", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(device.messages))
    command = json.loads(bytes(message.payload))  # type: ignore[arg-type]
    assert command["action"] == "update" and command["version"] == "1.0.6"
    assert command["component"] == "agent"

    # kubectl patch spec.paused: the real engine pauses; the CR says so.
    await kubectl(apiserver, "PATCH", f"{BASE}/agent-1-0-6", {"spec": {"paused": True}})
    await eventually(lambda: stored_status().get("phase") == "Paused", timeout=15,
                     message="Paused phase")
    assert stored_status()["observedGeneration"] == 2
