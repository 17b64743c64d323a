"""Outbound webhook notifications of rollout events (Slack relays, chat-ops, incident tools).

The reconcile loop must never wait on somebody else's web server, so
`publish()` only puts the event on a bounded queue and returns; a single
worker task delivers in order, signs each body with HMAC-SHA256 (the same
`sha256=<hex>` form GitHub uses, so receivers can reuse their verifiers), and
retries failures with capped exponential back-off and jitter. When the
receiver is down long enough for the queue to fill, the newest events are
dropped and counted rather than memory growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import aiohttp
import structlog

from fleetwave import __version__
from fleetwave.metrics import Metrics

log = structlog.get_logger("fleetwave.notify")

SIGNATURE_HEADER = "X-Fleetwave-Signature"
EVENT_HEADER = "X-Fleetwave-Event"
DELIVERY_HEADER = "X-Fleetwave-Delivery"

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""Client errors that mean "later", not "never"; every 5xx is retried too."""


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Fleetwave-Signature` value for `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def parse_filter(event_filter: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"StepStarted,Rollout*"` or `["Paused"]` -> glob patterns; empty means every event."""
    if event_filter is None:
        return ()
    items = event_filter.split(",") if isinstance(event_filter, str) else list(event_filter)
    return tuple(p.strip() for p in items if p.strip())


class Notifier:
    """Deliver rollout events to one URL.

    An event is a JSON-ready dict; `event_filter` globs are matched against its
    `reason` and `type` (e.g. `Paused`, `Rollout*`, `Warning`). Start delivery
    with `run()` as a task, or let the first `publish()` inside a running loop
    start it; `close()` delivers what is queued within a grace period, then stops.
    """

    def __init__(self, url: str, secret: str | bytes | None,
                 event_filter: str | Iterable[str] | None, metrics: Metrics, *,
                 max_queue: int = 1000, max_attempts: int = 6, backoff: float = 1.0,
                 max_backoff: float = 60.0, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.patterns = parse_filter(event_filter)
        self.metrics = metrics
        self.max_attempts = max_attempts
        """Tries per event, the first included; then it is dropped as `failed`."""
        self.backoff = backoff
        """Seconds before the first retry; doubled each time, with up to 50 % jitter."""
        self.max_backoff = max_backoff
        self.timeout = timeout
        """Seconds for one delivery attempt, connect to response."""
        self._queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue(maxsize=max_queue)
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- producer side (sync, never blocks) ----

    def wants(self, event: Mapping[str, Any]) -> bool:
        if not self.patterns:
            return True
        names = [str(event[k]) for k in ("reason", "type") if event.get(k) is not None]
        return any(fnmatch.fnmatchcase(name, pattern)
                   for name in names for pattern in self.patterns)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Queue `event` for delivery and return at once; a full queue drops it (counted)."""
        if self._closing.is_set() or not self.wants(event):
            return
        try:
            body = json.dumps(dict(event), default=_json_default,
                              ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError):
            log.warning("notify.unserialisable_event", reason=event.get("reason"))
            self.metrics.notifications.labels(result="dropped").inc()
            return
        name = str(event.get("reason") or event.get("type") or "event")
        try:
            self._queue.put_nowait((name, body, str(uuid.uuid4())))
        except asyncio.QueueFull:
            self.metrics.notifications.labels(result="dropped").inc()
            log.warning("notify.queue_full", url=self.url, dropped=name)
            return
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: run() or a later publish() starts delivery
        self._task = loop.create_task(self._deliver_forever(), name="notifier")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # ---- consumer side ----

    async def run(self) -> None:
        """Deliver until `close()`; safe to await as a task alongside the engine."""
        if self._task is None:
            self._task = asyncio.current_task()
            await self._deliver_forever()
        elif self._task is not asyncio.current_task():
            await asyncio.shield(self._task)

    async def _deliver_forever(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": f"fleetwave/{__version__}"})
        try:
            while not (self._closing.is_set() and self._queue.empty()):
                getter = asyncio.ensure_future(self._queue.get())
                closer = asyncio.ensure_future(self._closing.wait())
                done, _ = await asyncio.wait({getter, closer},
                                             return_when=asyncio.FIRST_COMPLETED)
                closer.cancel()
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    continue
                name, body, delivery = getter.result()
                await self._deliver(name, body, delivery)
                self._queue.task_done()
        finally:
            await self._session.close()

    async def _deliver(self, name: str, body: bytes, delivery: str) -> None:
        headers = {"Content-Type": "application/json", EVENT_HEADER: name,
                   DELIVERY_HEADER: delivery}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        assert self._session is not None
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            outcome = await self._attempt(body, headers)
            if outcome is None:
                self.metrics.notifications.labels(result="delivered").inc()
                return
            retryable, detail = outcome
            if not retryable or attempt == self.max_attempts:
                self.metrics.notifications.labels(result="failed").inc()
                log.warning("notify.failed", url=self.url, notification=name,
                            delivery=delivery, attempts=attempt, error=detail)
                return
            self.metrics.notifications.labels(result="retried").inc()
            log.info("notify.retry", url=self.url, notification=name, attempt=attempt,
                     error=detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(),
                                       delay * (1 + random.random() / 2))
            if self._closing.is_set():
                # Shutting down: the grace period is for the queue, not for a dead receiver.
                self.metrics.notifications.labels(result="failed").inc()
                log.warning("notify.failed", url=self.url, notification=name,
                            delivery=delivery, attempts=attempt, error="closing")
                return
            delay = min(self.max_backoff, delay * 2)

    async def _attempt(self, body: bytes, headers: Mapping[str, str]) -> tuple[bool, str] | None:
        """None when delivered; else whether to retry and what went wrong."""
        assert self._session is not None
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status < 300:
                    return None
                retry = resp.status >= 500 or resp.status in RETRYABLE_STATUSES
                return retry, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return True, f"{type(exc).__name__}: {exc}"

    async def close(self, grace: float = 5.0) -> None:
        """Deliver what is queued for up to `grace` seconds, then stop (the rest is dropped)."""
        self._closing.set()
        task = self._task
        if task is None or task is asyncio.current_task():
            self._count_dropped()
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._count_dropped()

    def _count_dropped(self) -> None:
        left = self._queue.qsize()
        if left:
            self.metrics.notifications.labels(result="dropped").inc(left)
            log.warning("notify.dropped_on_close", url=self.url, dropped=left)
            while not self._queue.empty():
                self._queue.get_nowait()
