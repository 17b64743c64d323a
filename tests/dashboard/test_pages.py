"""The dashboard's JSON pages and stream, in process, on a real engine, store and broker.

The fleet reaches the engine through its own ingest entry (`on_device_messages`, what
the MQTT link calls); the engine publishes its commands to a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app
from fleetwave.dashboard.live import MAX_SAMPLES, LiveFeed
from fleetwave.metrics import Metrics, build_metrics
from fleetwave.mqtt.link import MqttLink
from fleetwave.mqtt.settings import MqttSettings
from fleetwave.protocol.messages import Online, ReportedState
from fleetwave.protocol.signing import SigningKey
from fleetwave.resources.model import Rollout, SourceRef, resource_from
from fleetwave.runtime.engine import Engine, EngineHooks, Observed
from fleetwave.store import open_store
from tests.support.broker import RunningBroker

Client = TestClient[web.Request, web.Application]
DEVICES = 600
NAME = "agent"


def rollout() -> Rollout:
    r = resource_from({"kind": "Rollout", "metadata": {"name": NAME}, "spec": {
        "component": "agent", "version": "1.0.6", "selector": {},
        "strategy": {"steps": [{"percent": 5}, {"percent": 25}, {"percent": 100}],
                     "maxInFlight": 10}}}, SourceRef(kind="folder"))
    assert isinstance(r, Rollout)
    return r


@pytest.fixture
async def world(tmp_path: Path, broker: RunningBroker) -> AsyncIterator[
        tuple[Engine, Metrics, LiveFeed]]:
    store = open_store(f"sqlite:///{tmp_path / 'fleetwave.db'}")
    await store.migrate()
    metrics = build_metrics()
    feed = LiveFeed(metrics, max_streams=1)
    observed = Observed(store, metrics)
    user, password = broker.controller
    link = MqttLink(MqttSettings(url=broker.url, username=user, password=password,
                                 client_id="fleetwave-dashboard-test"), metrics,
                    observed.on_device_messages, signing_key=SigningKey.generate())
    engine = Engine(store, link, metrics, observed=observed,
                    hooks=EngineHooks(on_event=feed.on_event, on_status=feed.on_status))
    await link.start()
    try:
        await engine.start()
        now = time.time()
        await engine.on_device_messages(
            [ReportedState(device=f"dev-{i:04d}", versions={"agent": "1.0.5"}, received_at=now,
                           labels={"region": "eu" if i % 2 else "us"})
             for i in range(DEVICES)]
            + [Online(device=f"dev-{i:04d}", online=i % 10 != 0, received_at=now)
               for i in range(DEVICES)])
        engine.set_source({NAME: rollout()}, {}, "rev-1")
        await engine.reconcile_once()
        yield engine, metrics, feed
    finally:
        await link.stop()
        await store.close()


@pytest.fixture
async def client(world: tuple[Engine, Metrics, LiveFeed]) -> AsyncIterator[Client]:
    engine, metrics, feed = world
    app = build_app(engine, metrics, TokenSet.disabled(), live=feed)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_the_rollout_list_shows_each_wave_of_the_planner(client: Client) -> None:
    page = await get(client, "/dashboard/api/rollouts")
    (item,) = page["items"]
    assert [w["members"] for w in item["waves"]] == [30, 120, 450]  # 5 %, 25 %, 100 %
    assert item["waves"][0]["counts"] == {"inFlight": 10, "waiting": 20}  # maxInFlight 10
    assert item["phase"] == "Progressing" and item["startedAt"] is not None


async def test_device_pages_are_bounded_and_filtered(client: Client) -> None:
    page = await get(client, f"/dashboard/api/rollouts/{NAME}/devices?limit=200&offset=100")
    assert len(page["items"]) == 200 and page["total"] == DEVICES
    in_flight = await get(client, f"/dashboard/api/rollouts/{NAME}/devices?state=inFlight")
    assert in_flight["total"] == 10
    assert {d["state"] for d in in_flight["items"]} == {"pending"}
    eu = await get(client, f"/dashboard/api/rollouts/{NAME}/devices?wave=1&label=region%3Deu")
    assert all(d["labels"]["region"] == "eu" and d["wave"] == 1 for d in eu["items"])
    fleet = await get(client, "/dashboard/api/devices?online=false&limit=5")
    assert fleet["total"] == DEVICES // 10 and len(fleet["items"]) == 5
    summary = await get(client, "/dashboard/api/fleet")
    assert summary["online"] == {"online": 540, "offline": 60}
    assert summary["components"]["agent"] == [{"version": "1.0.5", "devices": DEVICES}]


async def test_the_plan_shows_each_waves_earliest_start_without_device_lists(
        client: Client) -> None:
    plan = await get(client, f"/dashboard/api/rollouts/{NAME}/plan")
    assert [w["step"] for w in plan["waves"]] == [1, 2, 3]
    assert all(w["earliestStart"] for w in plan["waves"])
    assert "devices" not in plan["waves"][0] and "devices" not in plan["excluded"]


@pytest.mark.parametrize(("path", "status", "code"), [
    pytest.param("/dashboard/api/rollouts?limit=100000", 400, "invalid_parameter", id="limit"),
    pytest.param("/dashboard/api/rollouts?phase=Sleeping", 400, "invalid_parameter",
                 id="phase"),
    pytest.param(f"/dashboard/api/rollouts/{NAME}/devices?label=a%01b", 400,
                 "invalid_parameter", id="control-character"),
    pytest.param("/dashboard/api/devices?online=maybe", 400, "invalid_parameter", id="online"),
    pytest.param("/dashboard/api/rollouts/nope/devices", 404, "not_found", id="unknown"),
    pytest.param("/dashboard/static/../server.py", 404, "not_found", id="traversal"),
])
async def test_bad_requests_get_a_reason(client: Client, path: str, status: int,
                                         code: str) -> None:
    body = await get(client, path, status)
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_the_page_ships_its_assets_under_a_strict_policy(client: Client) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    assert "/dashboard/static/app.js" in html and "http" not in html.split("<body>")[0]
    again = await client.get("/dashboard/static/app.js",
                             headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 200  # another file, another ETag
    js = await client.get("/dashboard/static/app.js")
    cached = await client.get("/dashboard/static/app.js",
                              headers={"If-None-Match": js.headers["ETag"]})
    assert cached.status == 304


async def read_event(resp: Any) -> tuple[str, str]:
    kind = ""
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            return kind, line[6:]


async def test_the_stream_says_hello_carries_changes_and_refuses_one_too_many(
        client: Client, world: tuple[Engine, Metrics, LiveFeed]) -> None:
    engine, metrics, _ = world
    resp = await client.get("/dashboard/api/stream")
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert (await read_event(resp))[0] == "hello"
    await engine.control(NAME, "pause", actor="test")
    seen = {(await read_event(resp))[0] for _ in range(2)}
    assert seen == {"rollout", "event"}
    refused = await get(client, "/dashboard/api/stream", 503)
    assert refused["error"]["code"] == "too_many_streams"
    assert metrics.registry.get_sample_value("fleetwave_dashboard_streams_refused_total") == 1
    assert metrics.registry.get_sample_value("fleetwave_dashboard_streams") == 1
    resp.close()
    chart = await get(client, f"/dashboard/api/rollouts/{NAME}/chart")
    assert chart["samples"][-1]["phase"] == "Paused"
    assert "Paused" in [m["reason"] for m in chart["marks"]]


def test_a_slow_stream_is_told_to_resync_instead_of_queueing_without_bound() -> None:
    feed = LiveFeed()
    subscriber = feed.subscribe()
    for i in range(subscriber.limit + 5):
        feed.on_event({"reason": "StepStarted", "n": i})
    resync, _, events = subscriber.take()
    assert resync and len(events) < subscriber.limit


async def test_samples_stay_bounded_and_keep_the_whole_history() -> None:
    clock = iter(range(10_000))
    feed = LiveFeed(clock=lambda: float(next(clock)))
    for done in range(3 * MAX_SAMPLES):
        await feed.on_status(NAME, {"progress": f"{done}/5000", "targeted": 5000})
    samples = feed.samples(NAME)
    assert len(samples) <= MAX_SAMPLES
    assert samples[0].done == 0 and samples[-1].done == 3 * MAX_SAMPLES - 1
