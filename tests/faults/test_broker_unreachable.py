"""An unreachable broker is told at once: `fleetwave run` logs its address (credentials
redacted) and the cause, again with back-off, and `/readyz` says not ready and why, until
the broker is there; then it connects and is ready. Today's operator with a typo in the
broker address would otherwise see "controller.started" and nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.mqtt.connection import ConnectionOptions, PahoConnection
from tests.replicas.cluster import answer
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, wait_until


def log_events(controller: Controller, event: str) -> list[dict[str, Any]]:
    out = []
    for line in controller.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                out.append(entry)
    return out


@pytest.mark.slow
def test_a_broker_down_at_start_is_logged_and_not_ready_until_it_is_up(
        tmp_path: Path, broker: RunningBroker,
        controller_factory: Callable[..., Controller]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    user, password = broker.controller
    broker.stop()
    controller = controller_factory(source, extra_args=[
        "--broker", f"mqtt://{user}:{password}@127.0.0.1:{broker.port}"])
    controller.start()
    failures = wait_until(lambda: log_events(controller, "mqtt.unreachable")[1:], 30,
                          lambda: f"no repeated mqtt.unreachable: {controller.tail()}")
    assert failures[0]["broker"] == f"mqtt://127.0.0.1:{broker.port}"
    assert "refused" in failures[0]["error"].lower()
    ready = controller.get("/readyz", ok_only=False)
    assert ready["status"] == 503
    body = wait_until(lambda: answer(controller, "/readyz"), 10, "no /readyz body")
    assert body["ready"] is False and "refused" in body["checks"]["broker"].lower()
    assert password not in controller.log.read_text()

    broker.start()
    wait_until(lambda: answer(controller, "/readyz").get("ready") is True, 60,
               lambda: f"not ready after the broker came back: {controller.tail()}")
    assert log_events(controller, "mqtt.connected")


async def test_commands_wait_while_the_broker_is_away_instead_of_queueing(
        broker: RunningBroker) -> None:
    """A publish while disconnected waits for the connection (paho would queue it without
    bound, and a command decided before an outage may be stale after it), then goes out."""
    options = ConnectionOptions(host=broker.host, port=broker.port, client_id="held-back",
                                username=broker.controller[0],
                                password=broker.controller[1], reconnect_min=0.1,
                                reconnect_max=0.5)
    connection = PahoConnection(options, on_message=lambda *a: None)
    broker.stop()
    await connection.start()
    try:
        publish = asyncio.create_task(connection.publish("iot/device/x/agent/update", b"{}"))
        done, _ = await asyncio.wait([publish], timeout=1.5)
        assert not done and connection.unacknowledged == 0  # held, nothing queued in paho
        assert connection.last_error is not None and "refused" in connection.last_error.lower()
        broker.start()
        async with asyncio.timeout(30):
            await publish
            await connection.flush()
        assert connection.connected and connection.last_error is None
    finally:
        await connection.stop()
