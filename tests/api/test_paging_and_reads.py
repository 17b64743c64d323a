"""Long lists come in pages of at most 1,000, and `--read-token-file` closes reads.

Against a real API server on 127.0.0.1 in front of the in-memory FakeControl (the
engine's own paging runs in tests/api/test_live_paging.py) and against a real store
for `/api/v1/updates`, whose pages are SQL keyset queries.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app
from fleetwave.metrics import Metrics
from fleetwave.store import Store
from fleetwave.updates.model import UpdateState
from tests.api.conftest import AUTH, TOKEN
from tests.api.fake_control import FakeControl
from tests.store.records import update

Client = TestClient[web.Request, web.Application]
READ_TOKEN = "read-only-token"


async def pages(client: Client, path: str, limit: int, **headers: str
                ) -> list[dict[str, Any]]:
    """Every page of `path`, following `next`."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        resp = await client.get(path, params=params, headers=headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        out.append(body)
        if body["next"] is None:
            return out
        params["cursor"] = body["next"]


def many_devices(control: FakeControl, count: int) -> None:
    control.devices = {f"dev-{i:05d}": {"uuid": f"dev-{i:05d}", "online": True,
                                        "versions": {"agent": "1.0.5"}, "labels": {}}
                       for i in range(count)}


@pytest.mark.parametrize("path", ["/api/v1/devices", "/api/v1/rollouts/agent-1-0-6/devices"])
async def test_pages_cover_every_device_once_in_uuid_order(
        client: Client, control: FakeControl, path: str) -> None:
    many_devices(control, 2_345)
    got = await pages(client, path, 1000)
    assert [len(p["items"]) for p in got] == [1000, 1000, 345]
    assert all(p["total"] == 2_345 for p in got)
    uuids = [d["uuid"] for p in got for d in p["items"]]
    assert uuids == sorted(control.devices)


async def test_default_page_is_100_and_the_maximum_is_1000(
        client: Client, control: FakeControl) -> None:
    many_devices(control, 250)
    body = await (await client.get("/api/v1/devices")).json()
    assert len(body["items"]) == 100 and body["next"] is not None
    resp = await client.get("/api/v1/devices", params={"limit": "1001"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_a_device_joining_between_pages_hides_and_repeats_no_other(
        client: Client, control: FakeControl) -> None:
    many_devices(control, 30)
    first = await (await client.get("/api/v1/devices", params={"limit": 10})).json()
    # Keyset paging: a device that sorts before the cursor joins; offsets would shift.
    control.devices["dev-00000a"] = {"uuid": "dev-00000a", "versions": {}, "labels": {}}
    rest = await pages(client, "/api/v1/devices", 10)
    seen = [d["uuid"] for d in first["items"]]
    cursor = first["next"]
    while cursor is not None:
        body = await (await client.get("/api/v1/devices",
                                       params={"limit": 10, "cursor": cursor})).json()
        seen += [d["uuid"] for d in body["items"]]
        cursor = body["next"]
    assert seen == sorted(f"dev-{i:05d}" for i in range(30))
    assert sum(len(p["items"]) for p in rest) == 31


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    pytest.param("not base64 !", id="not-base64"),
    pytest.param(_b64(b"{not json"), id="not-json"),
    pytest.param(_b64(b'{"a": 1}'), id="not-a-list"),
    pytest.param(_b64(b"[]"), id="empty"),
    pytest.param(_b64(b"[1]"), id="wrong-shape"),
    pytest.param(_b64(b'["a", "b"]'), id="too-long-key"),
    pytest.param(_b64(b"[NaN]"), id="nan"),
    pytest.param(_b64(b'["a\\u0000b"]'), id="nul"),
    pytest.param(_b64(b"[true]"), id="bool"),
    pytest.param("A" * 2000, id="oversized"),
])
async def test_a_cursor_the_server_did_not_hand_out_is_400(client: Client, cursor: str) -> None:
    resp = await client.get("/api/v1/devices", params={"cursor": cursor})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_parameter" and "cursor" in error["message"]


async def test_updates_pages_are_keyset_queries_on_the_store(store: Store) -> None:
    """The engine's query against a real store: 25 stale updates, 3 sharing a timestamp."""
    await store.updates.create(
        [update(f"u{i:02d}", device=f"d{i:02d}", created_at=float(i // 3)) for i in range(25)]
        + [update("done", device="dz", state=UpdateState.SUCCEEDED, created_at=0.0)])
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        page = await store.updates.stale(0.0, 1000.0, after=after, limit=10)
        seen += [r.id for r in page]
        if len(page) < 10:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == [f"u{i:02d}" for i in range(25)]


# ---- --read-token-file ---------------------------------------------------------------------

@pytest.fixture
async def guarded(control: FakeControl, metrics: Metrics, tokens: TokenSet
                  ) -> AsyncIterator[Client]:
    app = build_app(control, metrics, tokens, read_tokens=TokenSet.from_tokens([READ_TOKEN]))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


READS = ["/api/v1/rollouts", "/api/v1/rollouts/agent-1-0-6", "/api/v1/devices",
         "/api/v1/devices/dev-0", "/api/v1/devices/dev-0/updates", "/api/v1/updates",
         "/api/v1/rollouts/agent-1-0-6/devices", "/api/v1/rollouts/agent-1-0-6/events",
         "/api/v1/openapi.json"]


@pytest.mark.parametrize("path", READS)
async def test_every_read_needs_a_read_or_write_token(guarded: Client, metrics: Metrics,
                                                      path: str) -> None:
    missing = await guarded.get(path)
    assert missing.status == 401 and "WWW-Authenticate" in missing.headers
    wrong = await guarded.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 403
    assert (await wrong.json())["error"]["code"] == "forbidden"
    for token in (READ_TOKEN, TOKEN):
        ok = await guarded.get(path, headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200, (token, await ok.text())
    refused = metrics.registry.get_sample_value
    assert refused("fleetwave_api_requests_refused_total", {"reason": "unauthorized"}) == 1
    assert refused("fleetwave_api_requests_refused_total", {"reason": "forbidden"}) == 1


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_stay_open(guarded: Client, path: str) -> None:
    assert (await guarded.get(path)).status == 200


async def test_a_read_token_cannot_write(guarded: Client, control: FakeControl) -> None:
    resp = await guarded.post("/api/v1/rollouts/agent-1-0-6/pause",
                              headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert resp.status == 403
    resp = await guarded.post("/api/v1/rollouts/agent-1-0-6/pause", headers=AUTH)
    assert resp.status == 200
    assert [c[0] for c in control.calls] == ["control"]


async def test_reads_are_open_without_a_read_token_file(client: Client) -> None:
    assert (await client.get("/api/v1/devices")).status == 200
