"""A webhook gate the tests run: a real aiohttp server on 127.0.0.1 that answers what the
test says and keeps every request it got, with the signature checked by the test's own
HMAC (not fleetwave's), so a wrong signing scheme cannot verify against itself."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.http import serve

SIGNATURE_HEADER = "X-Fleetwave-Signature"
"""DESIGN.md: gate requests are signed like notifications."""


@dataclass(frozen=True)
class GateRequest:
    body: dict[str, Any]
    signed: bool
    """The signature header is `sha256=<hex HMAC-SHA256 of the body with the secret>`."""
    at: float
    """When it arrived (epoch seconds)."""


class GateServer:
    """Answers `answer` (HTTP status, JSON body) to every POST and records each request."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.answer: tuple[int, Any] = (200, {"allow": False})
        self.requests: list[GateRequest] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, ""))
        self.requests.append(GateRequest(json.loads(body), signed, time.time()))
        status, doc = self.answer
        return web.Response(status=status, text=json.dumps(doc),
                            content_type="application/json")


@asynccontextmanager
async def serving(gate: GateServer) -> AsyncIterator[GateServer]:
    """Serve `gate` on a free port of 127.0.0.1 on the running event loop."""
    app = web.Application()
    app.router.add_post("/gate", gate.handle)
    runner, url = await serve(app)
    gate.url = f"{url}/gate"
    try:
        yield gate
    finally:
        await runner.cleanup()


@contextmanager
def serving_in_thread(gate: GateServer) -> Iterator[GateServer]:
    """`serving` on an event loop of its own thread, for tests that drive real processes."""
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with serving(gate):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the gate server did not start")
    try:
        yield gate
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
