"""The HTTP API of DESIGN.md section 8 on aiohttp, in front of a `ControlPlane`.

aiohttp because the controller is one asyncio process (MQTT, store and kopf all
share its loop) and kopf already depends on it. This module is only the
protocol edge: it parses and validates requests, checks tokens and webhook
signatures, maps the engine's typed errors to status codes, and serialises.
Every response is JSON (except `/metrics`), every error is
`{"error": {"code", "message"}}`, and nothing a client sends yields a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import quote

import prometheus_client
import structlog
from aiohttp import web

from fleetwave.api.auth import AuthError, ReadAccess, TokenSet
from fleetwave.api.openapi import build_openapi
from fleetwave.api.ports import ControlError, ControlOp, ControlPlane, DeliveryLog, Key, Page
from fleetwave.api.webhooks import (
    Ignored,
    ReplayedDelivery,
    WebhookError,
    WebhookSecrets,
    delivery_key,
    verify_git_webhook,
    verify_registry_webhook,
)
from fleetwave.metrics import Metrics
from fleetwave.resources.durations import DurationError, parse_duration
from fleetwave.resources.schema import PHASES
from fleetwave.resources.vocabulary import CONTROL_OPS
from fleetwave.updates.model import UpdateState

if TYPE_CHECKING:
    from fleetwave.dashboard.live import LiveFeed

log = structlog.get_logger("fleetwave.api")

MAX_BODY = 1024 * 1024
"""Default bound on request bodies (1 MiB): webhook payloads are a few KiB, updates less."""

PAGE_DEFAULT_LIMIT = 100
PAGE_MAX_LIMIT = 1000
"""Page size of every long list (devices, a rollout's devices and events, updates, a
device's history): a page of 1,000 serialises in milliseconds, 100,000 devices at once
held the event loop for seconds."""
MAX_CURSOR = 1024
MAX_FIELD = 253
"""Longest component, version or id we accept: Kubernetes' name length, ample for tags."""

UPDATE_STATES = tuple(s.value for s in UpdateState)

class Leadership(Protocol):
    """Which replica leads (runtime/leadership.py's Elector); absent with one process."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def leader_address(self) -> str | None: ...


CONTROL_KEY = web.AppKey("control", ControlPlane)
METRICS_KEY = web.AppKey("metrics", Metrics)
TOKENS_KEY = web.AppKey("tokens", TokenSet)
READ_KEY = web.AppKey("read_access", ReadAccess)
SECRETS_KEY = web.AppKey("webhook_secrets", WebhookSecrets)
MAX_BODY_KEY = web.AppKey("max_body", int)
DELIVERIES_KEY = web.AppKey("deliveries", DeliveryLog)
LEADERSHIP_KEY = web.AppKey("leadership", Leadership)
Checks = Callable[[], Mapping[str, str]]
CHECKS_KEY: web.AppKey[Checks] = web.AppKey("checks")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API itself rejects (bad parameters or body), before the engine sees it."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False)


def json_response(data: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
    409: "conflict", 411: "length_required", 413: "body_too_large",
    414: "uri_too_long", 415: "unsupported_media_type", 422: "unprocessable",
    431: "headers_too_large", 501: "not_implemented",
}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error shape; a bug becomes a logged, opaque 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except AuthError as exc:
        request.app[METRICS_KEY].api_refused.labels(reason=exc.code).inc()
        headers = {"WWW-Authenticate": 'Bearer realm="fleetwave"'} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)
    except ControlError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except WebhookError as exc:
        request.app[METRICS_KEY].api_refused.labels(reason=_snake(exc.code)).inc()
        return error_response(exc.status, _snake(exc.code), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        if exc.status == 404:
            message = (f"no such endpoint: {request.method} {request.path}; "
                       "see /api/v1/openapi.json")
        elif exc.status == 405:
            message = (f"{request.method} is not allowed on {request.path}; "
                       f"allowed: {headers.get('Allow', '')}")
        elif exc.status == 413:
            message = (f"request body too large: the limit is "
                       f"{request.app[MAX_BODY_KEY]} bytes")
        else:
            message = exc.text or exc.reason
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "error"), message,
                              headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api_handler_failed", method=request.method, path=request.path)
        return error_response(500, "internal_error",
                              "the server failed on this request; the controller log has "
                              "the details")


@web.middleware
async def _read_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With `--read-token-file`, every read under /api/v1 needs a read or write token.

    Writes check their own (write) token in the handler; webhooks their signature.
    """
    if request.method in ("GET", "HEAD") and request.path.startswith("/api/v1/"):
        request.app[READ_KEY].authorize(request.headers.get("Authorization"))
    return await handler(request)


@web.middleware
async def _access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One structured line per request; the Authorization header and bodies are never logged."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        log.info("http_request", method=request.method, path=request.path, status=status,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2),
                 remote=request.remote)


@web.middleware
async def _writes_to_the_leader(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A follower serves reads; a write is answered 503 naming the leader's URL (not
    proxied: the client retries where it is told, and a follower holds no write path)."""
    leadership = request.app.get(LEADERSHIP_KEY)
    if leadership is None or request.method in READ_METHODS or leadership.is_leader:
        return await handler(request)
    leader = leadership.leader_address
    where = (f"send it to the leader at {leader}" if leader else
             "no replica leads right now; retry in a few seconds")
    response = error_response(503, "not_leader", f"this replica follows and takes no "
                              f"writes: {where}", {"Retry-After": "2"})
    if leader:
        response.headers["X-Fleetwave-Leader"] = leader
    return response


# ---- request parsing -----------------------------------------------------------------------

def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json"))


async def _json_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object; an absent body is `{}` where the body is optional."""
    body = await request.read()
    if not body.strip():
        if required:
            raise ApiError(400, "missing_body", "this request needs a JSON object body")
        return {}
    if not _is_json(request.content_type):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {request.content_type}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data


def _int_param(request: web.Request, name: str, default: int, *, minimum: int,
               maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, not {raw!r}") \
            from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ApiError(400, "invalid_parameter", f"{name} must be {bound}, not {value}")
    return value


def encode_cursor(key: Key) -> str:
    """The opaque `next` of a page: the last key, as URL-safe base64 of a JSON array."""
    return base64.urlsafe_b64encode(_dumps(list(key)).encode()).decode().rstrip("=")


def _cursor_part(value: Any) -> bool:
    """Strings without NUL and finite numbers: what a store can compare without failing."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, float) and math.isfinite(value)


def _decode_cursor(raw: str) -> Key:
    bad = ApiError(400, "invalid_parameter",
                   "cursor is not one this server handed out: pass the `next` of the "
                   "previous page unchanged, or leave it out to start at the beginning")
    if len(raw) > MAX_CURSOR:
        raise bad
    try:
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(key, list) or not key or not all(_cursor_part(k) for k in key):
        raise bad
    return tuple(key)


def _page_request(request: web.Request) -> tuple[Key | None, int]:
    """`?cursor=` and `?limit=` of a paginated list, checked."""
    limit = _int_param(request, "limit", PAGE_DEFAULT_LIMIT, minimum=1,
                       maximum=PAGE_MAX_LIMIT)
    raw = request.query.get("cursor") or None
    return (_decode_cursor(raw) if raw is not None else None), limit


def page_response(page: Page) -> web.Response:
    """`{"items", "next", "total"?}`: `items` as before paging, so old clients read page 1."""
    body: dict[str, Any] = {"items": page.items,
                            "next": encode_cursor(page.next) if page.next is not None else None}
    if page.total is not None:
        body["total"] = page.total
    return json_response(body)


def _check_keys(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid_body",
                       f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def _string_field(body: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, "invalid_body", f"`{key}` is required (a non-empty string)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_body", f"`{key}` must be a non-empty string")
    if len(value) > MAX_FIELD or any(ord(c) < 32 for c in value):
        raise ApiError(400, "invalid_body",
                       f"`{key}` must be at most {MAX_FIELD} printable characters")
    return value


def _timestamp_field(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_body", f"`{key}` must be an RFC 3339 timestamp or null")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_body",
                       f"`{key}` must be an RFC 3339 timestamp such as 2026-12-01T02:00:00Z, "
                       f"not {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_body",
                       f"`{key}` needs a timezone, e.g. 2026-12-01T02:00:00Z")
    return value


def _authorize(request: web.Request) -> str:
    return request.app[TOKENS_KEY].authorize(request.headers.get("Authorization"))


def _control(request: web.Request) -> ControlPlane:
    return request.app[CONTROL_KEY]


# ---- handlers ------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP; nothing else is checked, so a slow broker never
    gets the controller killed."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve (a follower is: it serves reads), and with replicas the role."""
    ready, reasons = _control(request).readiness()
    checks = dict(reasons)
    more = request.app.get(CHECKS_KEY)
    if more is not None:  # the process's own view: why the broker or the store is away
        checks.update(more())
        ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    leadership = request.app.get(LEADERSHIP_KEY)
    if leadership is not None:
        body.update(role="leader" if leadership.is_leader else "follower",
                    epoch=leadership.epoch, leader=leadership.leader_address)
    if ready:
        return json_response(body)
    detail = "; ".join(f"{k}: {v}" for k, v in checks.items()) or "not ready"
    body["error"] = {"code": "not_ready", "message": detail}
    return json_response(body, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = prometheus_client.generate_latest(request.app[METRICS_KEY].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = prometheus_client.CONTENT_TYPE_LATEST
    return response


async def openapi_endpoint(request: web.Request) -> web.Response:
    return json_response(build_openapi())


async def list_rollouts(request: web.Request) -> web.Response:
    phase = request.query.get("phase") or None
    if phase is not None and phase not in PHASES:
        raise ApiError(400, "invalid_parameter",
                       f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    return json_response({"items": _control(request).list_rollouts(phase)})


def _rollout_name(request: web.Request) -> str:
    return request.match_info["name"]


def _no_rollout(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no rollout named {name}")


async def get_rollout(request: web.Request) -> web.Response:
    name = _rollout_name(request)
    rollout = _control(request).get_rollout(name)
    if rollout is None:
        raise _no_rollout(name)
    return json_response(rollout)


async def delete_rollout(request: web.Request) -> web.Response:
    actor = _authorize(request)
    name = _rollout_name(request)
    await _control(request).delete_rollout(name, actor=actor)
    return json_response({"deleted": name})


async def rollout_devices(request: web.Request) -> web.Response:
    after, limit = _page_request(request)
    return page_response(await _control(request).rollout_devices(_rollout_name(request),
                                                                 after, limit))


async def rollout_events(request: web.Request) -> web.Response:
    offset = _int_param(request, "offset", 0, minimum=0)
    limit = _int_param(request, "limit", PAGE_DEFAULT_LIMIT, minimum=1,
                       maximum=PAGE_MAX_LIMIT)
    items, total = await _control(request).rollout_events(_rollout_name(request), offset, limit)
    return json_response({"items": items, "total": total, "offset": offset, "limit": limit})


def _control_handler(op: ControlOp) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        actor = _authorize(request)
        body = await _json_body(request, required=False)
        device: str | None = None
        if op == "promote":
            _check_keys(body, ("device",))
            device = _string_field(body, "device", required=False)
        else:
            _check_keys(body, ())
        rollout = await _control(request).control(_rollout_name(request), op, actor=actor,
                                                  device=device)
        return json_response(rollout)

    handle.__name__ = f"rollout_{op}"
    return handle


async def rollback_device(request: web.Request) -> web.Response:
    actor = _authorize(request)
    await _json_body(request, required=False)
    record = await _control(request).rollback_device(
        _rollout_name(request), request.match_info["uuid"], actor=actor)
    return json_response(record)


async def list_devices(request: web.Request) -> web.Response:
    after, limit = _page_request(request)
    return page_response(await _control(request).list_devices(after, limit))


async def get_device(request: web.Request) -> web.Response:
    uuid = request.match_info["uuid"]
    device = await _control(request).get_device(uuid)
    if device is None:
        raise ApiError(404, "not_found", f"no device {uuid}")
    return json_response(device)


UPDATE_FIELDS = ("component", "version", "force", "scheduled_time")


async def device_update(request: web.Request) -> web.Response:
    actor = _authorize(request)
    body = await _json_body(request, required=True)
    _check_keys(body, UPDATE_FIELDS)
    component = cast(str, _string_field(body, "component", required=True))
    version = cast(str, _string_field(body, "version", required=True))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "invalid_body", "`force` must be true or false")
    scheduled_time = _timestamp_field(body, "scheduled_time")
    rollout = await _control(request).ad_hoc_update(
        request.match_info["uuid"], component, version, force=force,
        scheduled_time=scheduled_time, actor=actor)
    name = rollout.get("name") if isinstance(rollout, dict) else None
    headers = ({"Location": f"/api/v1/rollouts/{quote(name, safe='')}"}
               if isinstance(name, str) else None)
    return json_response(rollout, status=201, headers=headers)


async def cancel_update(request: web.Request) -> web.Response:
    actor = _authorize(request)
    await _json_body(request, required=False)
    record = await _control(request).cancel_update(
        request.match_info["uuid"], request.match_info["id"], actor=actor)
    return json_response(record)


async def device_updates(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", PAGE_DEFAULT_LIMIT, minimum=1,
                       maximum=PAGE_MAX_LIMIT)
    items = await _control(request).device_updates(request.match_info["uuid"], limit)
    return json_response({"items": items})


async def list_updates(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in UPDATE_STATES:
        raise ApiError(400, "invalid_parameter",
                       f"state must be one of {', '.join(UPDATE_STATES)}, not {state!r}")
    older_than: float | None = None
    raw = request.query.get("olderThan") or None
    if raw is not None:
        try:
            older_than = parse_duration(raw).total_seconds()
        except DurationError as exc:
            raise ApiError(400, "invalid_parameter", f"olderThan: {exc}") from None
        except OverflowError:
            raise ApiError(400, "invalid_parameter", f"olderThan {raw!r} is too long") from None
    after, limit = _page_request(request)
    return page_response(await _control(request).list_updates(state, older_than, after, limit))


def _snake(code: str) -> str:
    """`MalformedPayload` -> `malformed_payload`: one spelling of error codes across the API."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", code).lower()


async def _first_delivery(request: web.Request, key: tuple[str, float] | None) -> str | None:
    """Refuse a delivery already handled (also before a restart); the key to forget if
    acting on it fails, None when the sender gave no id or no log is configured."""
    if key is None or DELIVERIES_KEY not in request.app:
        return None
    name, ttl = key
    now = time.time()
    if not await request.app[DELIVERIES_KEY].first(name, now, now + ttl):
        raise ReplayedDelivery("this delivery was already handled (same delivery id): a "
                               "replay, or a retry of one that succeeded; nothing was done")
    return name


async def _forget(request: web.Request, key: str | None) -> None:
    if key is not None:
        await request.app[DELIVERIES_KEY].forget(key)


async def git_webhook(request: web.Request) -> web.Response:
    """A verified push syncs the git source now; verified non-pushes (ping) are answered 200."""
    body = await request.read()
    push = verify_git_webhook(request.headers, body, request.app[SECRETS_KEY],
                              max_body=request.app[MAX_BODY_KEY], now=time.time())
    if isinstance(push, Ignored):
        return json_response({"accepted": False,
                              "ignored": {"event": push.event, "reason": push.reason}})
    key = await _first_delivery(request, delivery_key("git", request.headers))
    try:
        await _control(request).git_push(push.ref)
    except BaseException:
        await _forget(request, key)
        raise
    return json_response({"accepted": True, "ref": push.ref, "after": push.after}, status=202)


async def registry_webhook(request: web.Request) -> web.Response:
    body = await request.read()
    pushes = verify_registry_webhook(request.headers, body, request.app[SECRETS_KEY],
                                     query=request.query, max_body=request.app[MAX_BODY_KEY],
                                     now=time.time())
    if not pushes:
        return json_response({"items": []})
    key = await _first_delivery(request, delivery_key("registry", request.headers, pushes))
    try:
        outcomes = await _control(request).registry_pushes(pushes)
    except BaseException:
        await _forget(request, key)
        raise
    return json_response({"items": outcomes})


# ---- wiring ----------------------------------------------------------------------------------

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics_endpoint),
    ("GET", "/api/v1/openapi.json", openapi_endpoint),
    ("GET", "/api/v1/rollouts", list_rollouts),
    ("GET", "/api/v1/rollouts/{name}", get_rollout),
    ("DELETE", "/api/v1/rollouts/{name}", delete_rollout),
    ("GET", "/api/v1/rollouts/{name}/devices", rollout_devices),
    ("GET", "/api/v1/rollouts/{name}/events", rollout_events),
    *(("POST", f"/api/v1/rollouts/{{name}}/{op}", _control_handler(op)) for op in CONTROL_OPS),
    ("POST", "/api/v1/rollouts/{name}/devices/{uuid}/rollback", rollback_device),
    ("GET", "/api/v1/devices", list_devices),
    ("GET", "/api/v1/devices/{uuid}", get_device),
    ("POST", "/api/v1/devices/{uuid}/update", device_update),
    ("POST", "/api/v1/devices/{uuid}/updates/{id}/cancel", cancel_update),
    ("GET", "/api/v1/devices/{uuid}/updates", device_updates),
    ("GET", "/api/v1/updates", list_updates),
    ("POST", "/api/v1/webhooks/registry", registry_webhook),
    ("POST", "/api/v1/webhooks/git", git_webhook),
)


def build_app(control: ControlPlane, metrics: Metrics, tokens: TokenSet, *,
              webhook_secrets: WebhookSecrets | None = None,
              read_tokens: TokenSet | None = None,
              deliveries: DeliveryLog | None = None,
              max_body: int = MAX_BODY, live: LiveFeed | None = None,
              leadership: Leadership | None = None,
              checks: Checks | None = None) -> web.Application:
    """The API application; the caller owns the control plane's and the server's lifetimes.

    `webhook_secrets` authenticate both webhooks (HMAC key and/or shared tokens);
    without them every webhook delivery is refused with 401. `read_tokens` (enabled)
    close every read under /api/v1 to callers without a read or write token.
    `deliveries` (the store) remembers webhook delivery ids, so replays are refused
    across restarts; without it (API tests) deliveries are not deduplicated. The
    dashboard is served at `/`; `live` is the feed the engine's event and status hooks
    fill (without one its stream only says hello and keeps alive).
    """
    from fleetwave.dashboard.live import LiveFeed
    from fleetwave.dashboard.routes import mount as mount_dashboard

    app = web.Application(client_max_size=max_body,
                          middlewares=[_access_log, _errors, _read_guard,
                                       _writes_to_the_leader])
    if leadership is not None:
        app[LEADERSHIP_KEY] = leadership
    if checks is not None:
        app[CHECKS_KEY] = checks
    app[CONTROL_KEY] = control
    app[METRICS_KEY] = metrics
    app[TOKENS_KEY] = tokens
    app[READ_KEY] = ReadAccess(read_tokens or TokenSet.disabled(), tokens)
    if deliveries is not None:
        app[DELIVERIES_KEY] = deliveries
    app[SECRETS_KEY] = webhook_secrets if webhook_secrets is not None else WebhookSecrets()
    app[MAX_BODY_KEY] = max_body
    for method, path, handler in ROUTES:
        if method == "GET":
            app.router.add_get(path, handler)
        else:
            app.router.add_route(method, path, handler)
    mount_dashboard(app, control, live if live is not None else LiveFeed(metrics))
    return app


class ListenError(ValueError):
    """A `--listen` value that is not `host:port`."""


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:8080`, `[::1]:8080`, `:8080` (all interfaces) -> (host, port).

    >>> parse_listen("[::1]:9000")
    ('::1', 9000)
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep:
        raise ListenError(f"--listen {listen!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]") or "0.0.0.0"  # ":8080" asks for every interface
    try:
        port = int(port_text)
    except ValueError:
        raise ListenError(f"--listen {listen!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ListenError(f"--listen {listen!r}: the port must be between 0 and 65535")
    return host, port


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Start serving `app` on `listen`; port 0 picks a free one (see `runner.addresses`).

    Call `await runner.cleanup()` to stop. aiohttp's own access log is off: the
    structlog middleware writes one line per request instead.
    """
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("api_listening", addresses=[str(a) for a in runner.addresses])
    return runner
