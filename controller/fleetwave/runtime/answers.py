"""Reading the small JSON answer of a service fleetwave asks (a webhook gate, Prometheus).

One rule for both: the body is read up to a bound and no further, redirects are never
followed (the caller passes `allow_redirects=False`), and every way of not answering is
a short reason for the event and status message, never an exception in the loop.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int | None
    """The HTTP status (None: no answer at all)."""
    doc: Any = None
    problem: str = ""
    """Why there is no document: unreachable, too long, not JSON ("" when there is one)."""


async def read_json(request: AbstractAsyncContextManager[aiohttp.ClientResponse],
                    limit: int) -> JsonAnswer:
    """Send `request` (`session.get(...)` or `.post(...)`) and parse at most `limit` bytes."""
    try:
        async with request as response:
            raw = await response.content.read(limit + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return JsonAnswer(None, problem=f"unreachable ({type(exc).__name__})")
    if len(raw) > limit:
        return JsonAnswer(status, problem="answer too long")
    try:
        return JsonAnswer(status, json.loads(raw))
    except ValueError:
        return JsonAnswer(status, problem="answer is not JSON")
