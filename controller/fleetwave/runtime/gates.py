"""Webhook gates of rollout steps: the I/O half of `gate.webhook`.

The planner only reads answers (`GateResults`) and says which step waits for one
(`Plan.awaiting_gate`); asking happens here, in the background like the health
checks in checks.py, so a slow gate never holds up a pass. The request is signed
like notifications (`api.notify.sign`: `X-Fleetwave-Signature: sha256=<HMAC>`); a
2xx answer whose JSON says `{"allow": true}` opens the step, anything else (another
status, another body, a timeout, a refused connection) keeps it closed, asked again
after a back-off that doubles up to `max_backoff`. An open answer stands for that
rollout's version and step; every answer is kept as an event for the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import structlog

from fleetwave import __version__
from fleetwave.api.notify import SIGNATURE_HEADER, sign
from fleetwave.planner.model import GateResults, PlannedEvent
from fleetwave.resources.model import Rollout
from fleetwave.runtime.answers import read_json

log = structlog.get_logger("fleetwave.gates")

MAX_ANSWER_BYTES = 16 * 1024
"""A gate answers `{"allow": true}`; a longer body is read no further and is closed."""


@dataclass(slots=True)
class _Asked:
    version: str
    answer: bool | None = None
    next_ask: float = 0.0
    backoff: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class GateRunner:
    """Asks each waiting step's webhook in the background and remembers the answers."""

    def __init__(self, wake: Callable[[], None], *, first_backoff: float = 5.0,
                 max_backoff: float = 300.0, timeout: float = 10.0,
                 env: Mapping[str, str] | None = None) -> None:
        self._wake = wake
        self.first_backoff = first_backoff
        """Seconds before a closed gate is asked again; doubles each time it stays closed."""
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._env = env if env is not None else os.environ
        self._asked: dict[tuple[str, int], _Asked] = {}
        self._events: list[tuple[str, PlannedEvent]] = []

    def results(self, desired: Mapping[str, Rollout]) -> GateResults:
        """Answers that still apply: same rollout, same version (a new version asks anew)."""
        return {key: a.answer for key, a in self._asked.items()
                if key[0] in desired and desired[key[0]].spec.version == a.version}

    def drain_events(self) -> list[tuple[str, PlannedEvent]]:
        """(rollout, event) of every answer since the last call, for the event store."""
        events, self._events = self._events, []
        return events

    def retry_at(self, rollout: Rollout, step: int) -> float | None:
        """When step `step`'s closed gate is next asked (None: open, being asked, not asked
        yet): the loop wakes then, or a closed gate would wait for the resync interval."""
        asked = self._asked.get((rollout.name, step))
        if (asked is None or asked.version != rollout.spec.version or asked.answer is not False
                or (asked.task is not None and not asked.task.done())):
            return None
        return asked.next_ask

    def ask(self, rollout: Rollout, step: int, counts: Mapping[str, int], now: float) -> None:
        """Ask step `step`'s gate unless it is open, being asked, or backing off."""
        gate = rollout.spec.strategy.steps[step].gate
        if gate is None:
            return
        key = (rollout.name, step)
        asked = self._asked.get(key)
        if asked is None or asked.version != rollout.spec.version:
            asked = self._asked[key] = _Asked(rollout.spec.version)
        if asked.answer is True or (asked.task is not None and not asked.task.done()):
            return
        if now < asked.next_ask:
            return
        body = json.dumps({"rollout": rollout.name, "step": step + 1,
                           "version": rollout.spec.version, "counts": dict(counts)},
                          sort_keys=True).encode()
        secret = self._env.get(gate.secret_ref) if gate.secret_ref else None
        asked.task = asyncio.create_task(
            self._ask(key, asked, gate.url, body, secret, now), name=f"gate-{key[0]}-{step}")

    async def _ask(self, key: tuple[str, int], asked: _Asked, url: str, body: bytes,
                   secret: str | None, now: float) -> None:
        allow, why = await self._post(url, body, secret)
        asked.answer = allow
        if allow:
            asked.backoff = 0.0
        else:
            asked.backoff = min(self.max_backoff, max(self.first_backoff, asked.backoff * 2))
            asked.next_ask = now + asked.backoff
        step = key[1] + 1
        self._events.append((key[0], PlannedEvent(
            "Normal" if allow else "Warning", "GateOpened" if allow else "GateClosed",
            f"step {step} gate {'open' if allow else 'closed'}: {why}"
            + ("" if allow else f"; asked again in {asked.backoff:g}s"))))
        log.info("gate answered", rollout=key[0], step=step, allow=allow, why=why)
        self._wake()

    async def _post(self, url: str, body: bytes, secret: str | None) -> tuple[bool, str]:
        headers = {"Content-Type": "application/json",
                   "User-Agent": f"fleetwave/{__version__}"}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret.encode(), body)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            answer = await read_json(session.post(url, data=body, headers=headers,
                                                  allow_redirects=False), MAX_ANSWER_BYTES)
        if answer.status is None:
            return False, answer.problem
        if not 200 <= answer.status < 300:
            return False, f"HTTP {answer.status}"
        if answer.problem:
            return False, answer.problem
        doc = answer.doc
        if isinstance(doc, dict) and doc.get("allow") is True:
            return True, "allow: true"
        return False, "allow is not true"

    async def close(self) -> None:
        """Cancel the questions still under way (the process is stopping)."""
        tasks = [a.task for a in self._asked.values() if a.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
