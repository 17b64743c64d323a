"""`run_operator`: the whole replica (store, MQTT, engine, kopf, Lease, HTTP API) in one loop.

No Kubernetes API server can run on this machine, so kmock's KubernetesEmulator
(a real HTTP server on 127.0.0.1, extended in `apiserver.py`) stands in at the
HTTP boundary; it does not emulate schema validation, defaulting or RBAC.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import kopf

from fleetwave.mqtt.broker import free_port
from fleetwave.operator.process import run_operator
from fleetwave.operator.runtime import OperatorOptions
from fleetwave.runtime.settings import Settings
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import eventually
from tests.support.broker import RunningBroker

KEY = ("coordination.k8s.io/v1/leases", "fleetwave", "fleetwave-operator")


async def test_operator_process_serves_probes_and_releases_the_lease(
        apiserver: ApiServer, broker: RunningBroker, tmp_path: Path) -> None:
    port = free_port()
    user, password = broker.controller
    settings = Settings(broker=broker.url, broker_username=user, broker_password=password,
                        store=f"sqlite:///{tmp_path / 'fw.db'}", listen=f"127.0.0.1:{port}")
    options = OperatorOptions(identity="replica-p", lease_namespace="fleetwave",
                              lease_duration=1.5)

    async def credentials() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(apiserver.url).rstrip("/"))

    stop = asyncio.Event()
    task = asyncio.create_task(run_operator(settings, options, stop=stop,
                                            credentials=credentials))
    try:
        await eventually(lambda: _holder(apiserver) == "replica-p", timeout=15,
                         message="lease held")
        async with aiohttp.ClientSession() as http:
            async def ready() -> int:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status

            for _ in range(150):
                if await ready() == 200:
                    break
                await asyncio.sleep(0.1)
            assert await ready() == 200
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "fleetwave_" in await response.text()
        assert _holder(apiserver) == "replica-p"
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert _holder(apiserver) is None


def _holder(apiserver: ApiServer) -> str | None:
    try:
        holder = apiserver.objects[KEY].raw["spec"].get("holderIdentity")
    except KeyError:
        return "(no lease)"
    return str(holder) if holder is not None else None
