"""A real API server on 127.0.0.1 per test, in front of the in-memory FakeControl."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app
from fleetwave.api.webhooks import WebhookSecrets
from fleetwave.metrics import Metrics, build_metrics
from tests.api.fake_control import FakeControl

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = b"webhook-secret"
WEBHOOK_TOKEN = "webhook-token"
MAX_BODY = 64 * 1024


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def metrics() -> Metrics:
    return build_metrics()


@pytest.fixture
def tokens() -> TokenSet:
    return TokenSet.from_tokens(["another-token", TOKEN])


@pytest.fixture
async def client(control: FakeControl, metrics: Metrics,
                 tokens: TokenSet) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = build_app(control, metrics, tokens,
                    webhook_secrets=WebhookSecrets.of(WEBHOOK_SECRET, [WEBHOOK_TOKEN]),
                    max_body=MAX_BODY)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c
