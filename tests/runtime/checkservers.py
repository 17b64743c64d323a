"""Real loopback servers for health-check tests: a sentinel that counts every connection it
is offered, and hostile HTTP servers (an endless body, a trickle, a redirect)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp import web

from fleetwave.mqtt.broker import free_port


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"status: ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Sentinel(ThreadingHTTPServer):
    """Answers 200 "status: ok" on 127.0.0.1 and counts the connections it accepted: a test
    that must see no connection asserts `accepted == 0`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Health)
        self.accepted = 0
        self._lock = threading.Lock()

    def get_request(self) -> tuple[Any, Any]:
        request = super().get_request()
        with self._lock:
            self.accepted += 1
        return request

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def sentinel() -> Iterator[Sentinel]:
    server = Sentinel()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def hostile_app(redirect_to: str) -> web.Application:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        while True:
            await response.write(chunk)

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            await response.write(b"o")
            await asyncio.sleep(0.1)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(redirect_to)

    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/redirect", redirect)
    return app


class HostileServer:
    """`hostile_app` on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, redirect_to: str) -> None:
        self.port = free_port()
        self._app = hostile_app(redirect_to)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> HostileServer:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
