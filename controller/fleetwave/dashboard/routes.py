"""The dashboard's HTTP side: the page at `/`, its assets, bounded JSON pages and the stream.

Mounted by `fleetwave.api.server.build_app` on the API's own application, so the
API's error middleware, access log and listener serve it too. Reads are open like
the API's; every control button posts to the API's own write endpoints with the
bearer token the browser holds, so the dashboard has no write path of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from fleetwave.api.ports import ControlPlane
from fleetwave.api.server import ApiError, _int_param, json_response
from fleetwave.background import wake_or_stop
from fleetwave.dashboard.live import LiveFeed, TooManyStreams
from fleetwave.dashboard.views import Views, parse_label
from fleetwave.resources.schema import PHASES

PAGE_DEFAULT = 50
PAGE_MAX = 200
"""Rows per dashboard page: 200 devices are about 60 KiB, far below the 1 MiB bound."""

HEARTBEAT = 15.0
"""Seconds between keep-alive comments on an idle stream (proxies drop silent ones)."""

COALESCE = 0.5
"""Seconds a stream waits after sending, so a burst of changes is one message each."""

RETRY_MS = 2000
"""How soon a browser reconnects after the stream breaks (a controller restart)."""

ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

VIEWS_KEY = web.AppKey("dashboard_views", Views)
FEED_KEY = web.AppKey("dashboard_feed", LiveFeed)
ASSETS_KEY = web.AppKey("dashboard_assets", dict)
CLOSING_KEY = web.AppKey("dashboard_closing", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _load_assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, ETag), read once from the package."""
    folder = resources.files("fleetwave.dashboard") / "static"
    out: dict[str, tuple[bytes, str, str]] = {}
    for name, kind in {"index.html": "text/html", **ASSETS}.items():
        body = (folder / name).read_bytes()
        out[name] = (body, kind, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


def _asset(request: web.Request, name: str) -> web.Response:
    body, kind, etag = request.app[ASSETS_KEY][name]
    headers = {"ETag": etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=kind, charset="utf-8", headers=headers)


async def index(request: web.Request) -> web.Response:
    return _asset(request, "index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no dashboard asset {name!r}")
    return _asset(request, name)


def _views(request: web.Request) -> Views:
    return request.app[VIEWS_KEY]


def _page(request: web.Request) -> tuple[int, int]:
    return (_int_param(request, "offset", 0, minimum=0, maximum=10**9),
            _int_param(request, "limit", PAGE_DEFAULT, minimum=1, maximum=PAGE_MAX))


def _text_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    if len(value) > 253 or any(ord(c) < 32 for c in value):
        raise ApiError(400, "invalid_parameter",
                       f"{name} must be at most 253 printable characters")
    return value or None


async def rollouts(request: web.Request) -> web.Response:
    offset, limit = _page(request)
    phase = _text_param(request, "phase")
    if phase is not None and phase not in PHASES:
        raise ApiError(400, "invalid_parameter",
                       f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    return json_response(await _views(request).rollouts(offset, limit, phase))


async def rollout(request: web.Request) -> web.Response:
    return json_response(await _views(request).rollout(request.match_info["name"]))


async def rollout_devices(request: web.Request) -> web.Response:
    offset, limit = _page(request)
    wave = request.query.get("wave")
    step = _int_param(request, "wave", 0, minimum=1, maximum=1000) if wave else None
    return json_response(await _views(request).rollout_devices(
        request.match_info["name"], offset, limit, state=_text_param(request, "state"),
        wave=step, label=parse_label(_text_param(request, "label"))))


async def rollout_events(request: web.Request) -> web.Response:
    offset, limit = _page(request)
    return json_response(await _views(request).events(request.match_info["name"], offset,
                                                      limit))


async def rollout_chart(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    samples = [s.to_json() for s in request.app[FEED_KEY].samples(name)]
    return json_response(await _views(request).chart(name, samples))


async def rollout_plan(request: web.Request) -> web.Response:
    return json_response(await _views(request).plan(request.match_info["name"]))


async def devices(request: web.Request) -> web.Response:
    offset, limit = _page(request)
    online_text = _text_param(request, "online")
    if online_text not in (None, "true", "false"):
        raise ApiError(400, "invalid_parameter", f"online must be true or false, not "
                                                 f"{online_text!r}")
    online = None if online_text is None else online_text == "true"
    return json_response(await _views(request).devices(
        offset, limit, query=_text_param(request, "q"),
        label=parse_label(_text_param(request, "label")), online=online))


async def fleet(request: web.Request) -> web.Response:
    return json_response(await _views(request).fleet_summary())


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


INSTANCE = uuid.uuid4().hex[:12]
"""This process: a browser that sees a new one after reconnecting knows to refetch all."""


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `hello` on (re)connect, then `rollout` (a changed status),
    `event` (the audit trail) and `resync` (this stream fell behind: fetch afresh)."""
    feed = request.app[FEED_KEY]
    try:
        subscriber = feed.subscribe()
    except TooManyStreams as exc:
        raise ApiError(503, "too_many_streams", str(exc), {"Retry-After": "30"}) from None
    closing = request.app[CLOSING_KEY]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode()
                             + _sse("hello", {"instance": INSTANCE, "time": time.time()}))
        while not closing.is_set():
            woken = await wake_or_stop(subscriber.wake, closing, HEARTBEAT)
            if closing.is_set():
                break
            if not woken:
                await response.write(b": keep-alive\n\n")
                continue
            resync, statuses, events = subscriber.take()
            chunks = [_sse("resync", {})] if resync else []
            chunks += [_sse("rollout", {"name": n, "status": s}) for n, s in statuses.items()]
            chunks += [_sse("event", e) for e in events]
            await response.write(b"".join(chunks))
            await asyncio.sleep(COALESCE)
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        feed.unsubscribe(subscriber)
    return response


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/", index),
    ("/dashboard/static/{file}", static),
    ("/dashboard/api/rollouts", rollouts),
    ("/dashboard/api/rollouts/{name}", rollout),
    ("/dashboard/api/rollouts/{name}/devices", rollout_devices),
    ("/dashboard/api/rollouts/{name}/events", rollout_events),
    ("/dashboard/api/rollouts/{name}/chart", rollout_chart),
    ("/dashboard/api/rollouts/{name}/plan", rollout_plan),
    ("/dashboard/api/devices", devices),
    ("/dashboard/api/fleet", fleet),
    ("/dashboard/api/stream", stream),
)


def mount(app: web.Application, control: ControlPlane, feed: LiveFeed) -> None:
    """Add the dashboard to the API application `app`."""
    app[VIEWS_KEY] = Views(control)
    app[FEED_KEY] = feed
    app[ASSETS_KEY] = _load_assets()
    app[CLOSING_KEY] = asyncio.Event()

    async def close_streams(app: web.Application) -> None:
        app[CLOSING_KEY].set()  # open streams end now, not at the shutdown timeout

    app.on_shutdown.append(close_streams)
    for path, handler in ROUTES:
        app.router.add_get(path, handler)

