"""Fixtures for the operator tests: an emulated API server and operators that run against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import kmock
import kopf
import pytest

from fleetwave.operator.runtime import OperatorOptions, OperatorRuntime
from tests.operator.apiserver import ApiServer

ROLLOUTS = "/apis/fleetwave.io/v1alpha1/namespaces/{ns}/rollouts"


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer()
    server.register_crds()
    async with server, kmock.Server(server):
        yield server


@dataclass
class Running:
    runtime: OperatorRuntime
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self, within: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), within)


@pytest.fixture
async def operators(apiserver: ApiServer) -> AsyncIterator[Callable[..., Any]]:
    """Start operators (each with its own kopf registry) against the emulator; stop them all."""
    running: list[Running] = []

    async def credentials() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(apiserver.url).rstrip("/"))

    async def start(engine: Any, identity: str = "replica-a", **overrides: Any) -> Running:
        options = OperatorOptions(identity=identity, lease_namespace="fleetwave",
                                  lease_duration=overrides.pop("lease_duration", 1.5),
                                  status_interval=overrides.pop("status_interval", 0.2),
                                  sync_retry=0.2, **overrides)
        runtime = OperatorRuntime(engine, credentials, options)
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        item = Running(runtime, stop, task)
        running.append(item)
        return item

    yield start
    for item in running:
        with contextlib.suppress(Exception):
            await item.shutdown()


async def eventually(condition: Callable[[], Any], timeout: float = 10.0,  # noqa: ASYNC109
                     message: str = "condition") -> None:
    """Wait until `condition()` is truthy; fail the test (not hang) when it is not in time."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(0.02)


def rollout(name: str, namespace: str = "fleet", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "component": "agent", "version": "1.0.6",
        "selector": {"matchLabels": {"device_type": "rpi4"}},
        "strategy": {"steps": [{"percent": 25}, {"percent": 100}]},
    }
    body.update(spec)
    return {"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


async def kubectl(apiserver: ApiServer, method: str, path: str, body: Any = None,
                  content_type: str = "application/merge-patch+json") -> tuple[int, Any]:
    """What `kubectl apply/patch/delete` sends, through the emulator's own client."""
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"json": body, "headers": {"Content-Type": content_type}}
    async with apiserver.request(method, path, **kwargs) as response:
        return response.status, await response.json(content_type=None)


def sent(request: Any) -> Any:
    """The JSON body exactly as the operator sent it (the emulator enriches `.data`)."""
    return json.loads(request.body) if request.body else None
