"""Outbound notifications against a real local receiver: signed, retried, filtered, and
never blocking the caller even when the receiver hangs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fleetwave.api.notify import SIGNATURE_HEADER, Notifier, verify
from fleetwave.metrics import Metrics, build_metrics

SECRET = b"notify-secret"


@dataclass
class Receiver:
    """A webhook receiver whose answer per request is scripted by the test."""

    statuses: list[int] = field(default_factory=list)
    hang: asyncio.Event | None = None
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({}, status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url("/hook"))
    try:
        yield rec
    finally:
        if rec.hang is not None:
            rec.hang.set()
        await server.close()


def result(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value("fleetwave_notifications_total",
                                             {"result": name}) or 0.0


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a metric: the notifier has no completion event to wait on, by design."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


EVENT = {"rollout": "agent-1-0-6", "type": "Normal", "reason": "StepStarted",
         "message": "wave 2 of 4", "device": None}


async def test_delivers_signed_body(receiver: Receiver) -> None:
    metrics = build_metrics()
    notifier = Notifier(receiver.url, SECRET.decode(), None, metrics)
    notifier.publish(EVENT)
    await wait_for(lambda: result(metrics, "delivered") == 1)
    await notifier.close()
    headers, body = receiver.received[0]
    assert json.loads(body) == EVENT
    assert verify(SECRET, body, headers[SIGNATURE_HEADER])
    assert not verify(b"other-secret", body, headers[SIGNATURE_HEADER])
    assert headers["X-Fleetwave-Event"] == "StepStarted"


async def test_retries_after_server_errors_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    metrics = build_metrics()
    notifier = Notifier(receiver.url, SECRET, None, metrics, backoff=0.01)
    notifier.publish(EVENT)
    await wait_for(lambda: result(metrics, "delivered") == 1)
    await notifier.close()
    assert len(receiver.received) == 3
    assert result(metrics, "retried") == 2
    assert len({h["X-Fleetwave-Delivery"] for h, _ in receiver.received}) == 1
    assert len({b for _, b in receiver.received}) == 1


async def test_gives_up_on_client_errors_and_after_max_attempts(receiver: Receiver) -> None:
    receiver.statuses = [400, 500, 500, 500]
    metrics = build_metrics()
    notifier = Notifier(receiver.url, SECRET, None, metrics, backoff=0.01, max_attempts=3)
    notifier.publish(EVENT)
    notifier.publish({**EVENT, "reason": "Paused"})
    await wait_for(lambda: result(metrics, "failed") == 2)
    await notifier.close()
    assert len(receiver.received) == 4  # 1 (400: never retried) + 3 attempts


@pytest.mark.parametrize(("event_filter", "delivered"), [
    pytest.param(None, ["StepStarted", "Paused", "Completed"], id="everything"),
    pytest.param("Paused,Completed", ["Paused", "Completed"], id="comma-string"),
    pytest.param(["Step*"], ["StepStarted"], id="glob"),
    pytest.param(["Warning"], ["Paused"], id="by-type"),
])
async def test_filter(receiver: Receiver, event_filter: object, delivered: list[str]) -> None:
    metrics = build_metrics()
    notifier = Notifier(receiver.url, SECRET, event_filter, metrics)  # type: ignore[arg-type]
    for reason, kind in (("StepStarted", "Normal"), ("Paused", "Warning"),
                         ("Completed", "Normal")):
        notifier.publish({**EVENT, "reason": reason, "type": kind})
    await notifier.close()
    assert [json.loads(b)["reason"] for _, b in receiver.received] == delivered


async def test_publish_never_blocks_when_the_receiver_hangs(receiver: Receiver) -> None:
    receiver.hang = asyncio.Event()
    metrics = build_metrics()
    notifier = Notifier(receiver.url, SECRET, None, metrics, max_queue=10, timeout=30)
    notifier.publish(EVENT)
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    started = time.perf_counter()
    for i in range(1000):
        notifier.publish({**EVENT, "message": str(i)})
    assert time.perf_counter() - started < 0.5
    assert notifier.pending == 10
    assert result(metrics, "dropped") == 990
    started = time.perf_counter()
    await notifier.close(grace=0.2)
    assert time.perf_counter() - started < 2
    assert result(metrics, "dropped") == 1000


async def test_unreachable_receiver_is_retried_then_failed() -> None:
    metrics = build_metrics()
    notifier = Notifier("http://127.0.0.1:9/hook", SECRET, None, metrics, backoff=0.01,
                        max_attempts=2, timeout=2)
    notifier.publish(EVENT)
    await wait_for(lambda: result(metrics, "failed") == 1)
    await notifier.close()
    assert result(metrics, "retried") == 1


async def test_run_as_a_task_then_close(receiver: Receiver) -> None:
    metrics = build_metrics()
    notifier = Notifier(receiver.url, None, None, metrics)
    task = asyncio.create_task(notifier.run())
    await asyncio.sleep(0)
    notifier.publish(EVENT)
    await wait_for(lambda: result(metrics, "delivered") == 1)
    await notifier.close()
    await asyncio.wait_for(task, 5)
    assert SIGNATURE_HEADER not in receiver.received[0][0]
