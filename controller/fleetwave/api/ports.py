"""The seam between the HTTP API and the engine.

The API only ever talks to a `ControlPlane`; the runtime's engine implements
it for `run`, `operator` and `demo` alike. Values crossing it are JSON-ready
dicts in the field names of DESIGN.md section 8, so the API adds no mapping of
its own and the CLI sees exactly what the API serves.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetwave.resources.vocabulary import ControlOp

__all__ = ["JSON", "Conflict", "ControlError", "ControlOp", "ControlPlane", "InvalidCursor", "Key",
           "NotFound", "Page", "page_after"]

JSON = dict[str, Any]


class ControlError(Exception):
    """A request the engine refuses; `status` is the HTTP status, `code` a stable slug."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ControlError):
    status = 404
    code = "not_found"


class Conflict(ControlError):
    status = 409
    code = "conflict"


class InvalidCursor(ControlError):
    """A `cursor` that no page of this list handed out (tampered, or from another list)."""

    code = "invalid_parameter"


Key = tuple[Any, ...]
"""A list's sort key; the API wraps the last key of a page into the opaque `cursor`."""


@dataclass(frozen=True)
class Page:
    """One page of a long list: `next` is the key to continue after, None on the last page."""

    items: list[JSON]
    next: Key | None
    total: int | None = None


def page_after(keys: Sequence[str], after: Key | None, limit: int) -> tuple[list[str], Key | None]:
    """The `limit` keys of sorted `keys` after `after`, and the key to continue after.

    Keyset rather than offset paging: a device that joins or leaves between two requests
    neither repeats nor hides another one.

    >>> page_after(["a", "b", "c"], ("a",), 1)
    (['b'], ('b',))
    >>> page_after(["a", "b", "c"], ("b",), 5)
    (['c'], None)
    """
    if after is not None and (len(after) != 1 or not isinstance(after[0], str)):
        raise InvalidCursor("cursor does not belong to this list: start again without it")
    start = 0 if after is None else bisect.bisect_right(keys, after[0])
    chosen = list(keys[start:start + limit])
    more = start + limit < len(keys)
    return chosen, ((chosen[-1],) if more and chosen else None)


class ControlPlane(Protocol):
    def list_rollouts(self, phase: str | None = None) -> list[JSON]:
        """`{"name", "spec", "status", "source": {"kind", "revision", "path"}}` each."""
        ...

    def get_rollout(self, name: str) -> JSON | None: ...

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        """Per device of the rollout, by uuid: uuid, state, attempt, versions; NotFound."""
        ...

    async def rollout_events(self, name: str, offset: int, limit: int) -> tuple[list[JSON], int]:
        """Oldest first, and the total count; NotFound."""
        ...

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> JSON:
        """Apply a control operation; returns the rollout. NotFound, Conflict."""
        ...

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> JSON:
        """Put one device of the rollout back on its previous version; returns the record."""
        ...

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        """Only rollouts whose source is `api` or `policy`; others are Conflict."""
        ...

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        """Devices by uuid, `limit` at a time; InvalidCursor for a foreign `after`."""
        ...

    async def get_device(self, uuid: str) -> JSON | None: ...

    async def device_updates(self, uuid: str, limit: int = 100) -> list[JSON]:
        """Newest first; NotFound for an unknown device."""
        ...

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> JSON:
        """A one-device Rollout with `source.kind: api`; returns the rollout."""
        ...

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> JSON: ...

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        """Open (or `state`) updates older than `older_than` seconds, oldest first."""
        ...

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[JSON]:
        """Feed verified registry pushes to the RolloutPolicies; one outcome each."""
        ...

    async def git_push(self, ref: str | None) -> None:
        """Sync the git source now."""
        ...

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        """Ready, and a reason per component (store, broker, source) for `/readyz`."""
        ...


class DeliveryLog(Protocol):
    """Webhook deliveries already handled, persisted (`store.deliveries` implements it)."""

    async def first(self, key: str, now: float, expires_at: float) -> bool:
        """Remember `key` until `expires_at`; False when it is remembered already."""
        ...

    async def forget(self, key: str) -> None: ...
