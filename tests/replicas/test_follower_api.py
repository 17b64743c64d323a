"""The API of a replica (DESIGN.md 9.3): /readyz names the role, the epoch and the leader;
a follower serves reads and answers writes with 503 `not_leader` naming the leader's URL
(not proxied), and /readyz adds why the broker or the store is away. A real aiohttp server
on 127.0.0.1 in front of the in-memory FakeControl."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app
from fleetwave.metrics import build_metrics
from tests.api.fake_control import FakeControl

AUTH = {"Authorization": "Bearer t0ken"}


@dataclass
class Role:
    is_leader: bool
    epoch: int | None
    leader_address: str | None


Client = TestClient[web.Request, web.Application]


@pytest.fixture
def role() -> Role:
    return Role(False, None, "http://leader:8080")


@pytest.fixture
def checks() -> dict[str, str]:
    """What the process adds to /readyz (ControllerCore.readiness in `fleetwave run`)."""
    return {}


@pytest.fixture
async def client(role: Role, checks: dict[str, str]) -> AsyncIterator[Client]:
    app = build_app(FakeControl(), build_metrics(), TokenSet.from_tokens(["t0ken"]),
                    leadership=role, checks=lambda: checks)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_a_follower_serves_reads_and_refuses_writes_naming_the_leader(
        client: Client, role: Role) -> None:
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["role"] == "follower"
    assert (await ready.json())["leader"] == "http://leader:8080"
    assert (await client.get("/api/v1/rollouts", headers=AUTH)).status == 200
    refused = await client.post("/api/v1/rollouts/r/pause", headers=AUTH)
    assert refused.status == 503
    body = await refused.json()
    assert body["error"]["code"] == "not_leader"
    assert "http://leader:8080" in body["error"]["message"]
    assert refused.headers["X-Fleetwave-Leader"] == "http://leader:8080"
    assert refused.headers["Retry-After"] == "2"


async def test_without_a_leader_the_refusal_says_to_retry(client: Client, role: Role) -> None:
    role.leader_address = None
    refused = await client.delete("/api/v1/rollouts/r", headers=AUTH)
    assert refused.status == 503
    assert "no replica leads" in (await refused.json())["error"]["message"]


async def test_the_leader_takes_writes_and_reports_its_epoch(client: Client,
                                                             role: Role) -> None:
    role.is_leader, role.epoch, role.leader_address = True, 7, "http://me:8080"
    body = await (await client.get("/readyz")).json()
    assert (body["role"], body["epoch"]) == ("leader", 7)
    answered = await client.post("/api/v1/rollouts/r/pause", headers=AUTH)
    assert answered.status != 503


async def test_readyz_says_why_the_broker_is_away(client: Client,
                                                  checks: dict[str, str]) -> None:
    checks["broker"] = "unreachable: mqtt://b:1883: Connection refused"
    answer = await client.get("/readyz")
    assert answer.status == 503
    body = await answer.json()
    assert body["ready"] is False and "Connection refused" in body["error"]["message"]
