"""Leader election on a `coordination.k8s.io/v1` Lease: one replica plans, the others wait.

Why our own and not kopf's peering: kopf's peering pauses *kopf's handlers*
on the non-priority replicas, but our planning loop is not a kopf handler,
and peering has no fencing (two operators may both run for a while after a
network split). The Lease here decides who runs the engine loop; kopf runs
standalone on every replica (`settings.peering.standalone = True`) and only
keeps each replica's picture of the custom resources current.

How it works (the algorithm of client-go's leaderelection):

- The Lease holds `holderIdentity`, `leaseDurationSeconds`, `acquireTime`,
  `renewTime` and `leaseTransitions`.
- A candidate reads the Lease. Absent: it creates it naming itself; a 409
  means another replica created it first. Held by another: it waits until it
  has seen no change of the record for `leaseDurationSeconds` *by its own
  monotonic clock* (so the clocks of the replicas need not agree), then takes
  it over with a merge patch guarded by the `resourceVersion` it read; a 409
  means someone else changed the Lease first (renewed it, or won the race).
- The leader renews every `duration / 3` with a guarded patch. If it cannot
  renew within `renew_deadline` (two thirds of the duration), or a renewal is
  refused (409 and the Lease names another holder, or the Lease is gone), it
  steps down at once, *before* a standby could consider the Lease expired.
- A leader that stops cleanly releases the Lease (clears the holder) so that
  a standby takes over within one retry period instead of a full duration.

Caveats, stated plainly:

- Fencing is by time, not by token: a leader frozen longer than the lease
  duration (a stopped process, a stalled node) may execute the rest of a pass
  after a standby took over. The store guards the consequences: update records
  are created idempotently (a second leader's record for the same attempt
  loses the race and is skipped), commands carry correlation ids devices
  deduplicate, and every status write is a full replacement.
- Timing assumes monotonic clocks that run at roughly the same *rate* on all
  replicas (not that they agree on the time).
- Standbys still run kopf handlers (read-only) and the HTTP API; write
  operations on the API of a standby are refused with 409 so that control
  reaches the engine that plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from fleetwave.operator.kube import ApiError, ConflictError, KubeClient, NotFoundError, object_path

log = structlog.get_logger("fleetwave.operator.lease")

Callback = Callable[[], Awaitable[None]]


def micro_time(ts: float) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquires, renews and releases one Lease; calls back when leadership starts or ends."""

    def __init__(self, client: KubeClient, *, name: str, namespace: str, identity: str,
                 duration: float = 15.0, renew_interval: float | None = None,
                 retry_interval: float | None = None, renew_deadline: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        """Seconds a standby waits, after the last change it saw, before taking the Lease."""
        self.renew_interval = renew_interval if renew_interval is not None else duration / 3
        self.retry_interval = retry_interval if retry_interval is not None else duration / 3
        self.renew_deadline = renew_deadline if renew_deadline is not None else duration * 2 / 3
        """The leader steps down when it has not renewed for this long: before others take over."""
        self.monotonic = monotonic
        self.wallclock = wallclock
        self.leading = False
        self.holder: str | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._renewed_at = 0.0
        self._transitions = 0

    @property
    def path(self) -> str:
        return object_path("coordination.k8s.io/v1", "leases", self.namespace, self.name)

    def _spec(self, *, acquire: bool, transitions: int) -> dict[str, Any]:
        now = micro_time(self.wallclock())
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": max(1, round(self.duration)),
                                "renewTime": now, "leaseTransitions": transitions}
        if acquire:
            spec["acquireTime"] = now
        return spec

    def _observe(self, lease: dict[str, Any]) -> dict[str, Any]:
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  spec.get("leaseTransitions"), meta.get("resourceVersion"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self.monotonic()
        self._resource_version = meta.get("resourceVersion")
        self.holder = spec.get("holderIdentity") or None
        self._transitions = int(spec.get("leaseTransitions") or 0)
        return dict(spec)

    async def try_acquire(self) -> bool:
        """One attempt to become the leader; True when this replica now holds the Lease."""
        try:
            lease = await self.client.get(self.path)
        except NotFoundError:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(acquire=True, transitions=0)}
            try:
                created = await self.client.create(
                    object_path("coordination.k8s.io/v1", "leases", self.namespace), body)
            except ConflictError:
                log.info("lease.create_lost", lease=self.name, identity=self.identity)
                return False
            self._observe(created)
            return self._won()
        spec = self._observe(lease)
        holder = spec.get("holderIdentity") or None
        expired = (holder is None or
                   self.monotonic() - self._observed_at >= float(
                       spec.get("leaseDurationSeconds") or self.duration))
        if holder != self.identity and not expired:
            return False
        transitions = self._transitions + (0 if holder == self.identity else 1)
        patch = {"metadata": {"resourceVersion": self._resource_version},
                 "spec": self._spec(acquire=True, transitions=transitions)}
        try:
            updated = await self.client.merge_patch(self.path, patch)
        except (ConflictError, NotFoundError):
            log.info("lease.takeover_lost", lease=self.name, identity=self.identity)
            return False
        self._observe(updated)
        log.info("lease.taken_over", lease=self.name, identity=self.identity,
                 previous=holder, transitions=transitions)
        return self._won()

    def _won(self) -> bool:
        if self.holder != self.identity:
            return False
        self._renewed_at = self.monotonic()
        return True

    async def renew(self) -> bool:
        """One renewal; False when the Lease is provably someone else's (or gone)."""
        patch = {"metadata": {"resourceVersion": self._resource_version},
                 "spec": {"holderIdentity": self.identity,
                          "renewTime": micro_time(self.wallclock())}}
        try:
            updated = await self.client.merge_patch(self.path, patch)
        except NotFoundError:
            return False
        except ConflictError:
            lease = await self.client.get(self.path)
            self._observe(lease)
            if self.holder != self.identity:
                return False
            return await self.renew_once_more()
        self._observe(updated)
        self._renewed_at = self.monotonic()
        return self.holder == self.identity

    async def renew_once_more(self) -> bool:
        """After a 409 on a Lease still naming us (someone touched it): one fresh attempt."""
        patch = {"metadata": {"resourceVersion": self._resource_version},
                 "spec": {"holderIdentity": self.identity,
                          "renewTime": micro_time(self.wallclock())}}
        try:
            updated = await self.client.merge_patch(self.path, patch)
        except (ConflictError, NotFoundError):
            return False
        self._observe(updated)
        self._renewed_at = self.monotonic()
        return self.holder == self.identity

    async def release(self) -> None:
        """Clear the holder so that a standby need not wait for the Lease to expire."""
        patch = {"metadata": {"resourceVersion": self._resource_version},
                 "spec": {"holderIdentity": None, "leaseDurationSeconds": 1,
                          "renewTime": micro_time(self.wallclock())}}
        try:
            await self.client.merge_patch(self.path, patch)
            log.info("lease.released", lease=self.name, identity=self.identity)
        except (TimeoutError, ApiError, OSError) as exc:
            log.warning("lease.release_failed", lease=self.name, error=str(exc))

    async def run(self, stop: asyncio.Event, *, on_started: Callback,
                  on_stopped: Callback) -> None:
        """Campaign until `stop`; `on_stopped` runs before anything else on a lost Lease."""
        try:
            while not stop.is_set():
                if not self.leading:
                    try:
                        acquired = await self.try_acquire()
                    except (TimeoutError, ApiError, OSError) as exc:
                        log.warning("lease.acquire_failed", lease=self.name, error=str(exc))
                        acquired = False
                    if acquired:
                        self.leading = True
                        log.info("lease.leading", lease=self.name, identity=self.identity)
                        await on_started()
                        interval = self.renew_interval
                    else:
                        interval = self.retry_interval
                else:
                    remaining = self.renew_deadline - (self.monotonic() - self._renewed_at)
                    try:
                        # A renewal slower than the deadline is a lost Lease, not a late one.
                        kept = await asyncio.wait_for(self.renew(), timeout=max(0.01, remaining))
                    except (TimeoutError, ApiError, OSError) as exc:
                        log.warning("lease.renew_failed", lease=self.name, error=str(exc))
                        kept = self.monotonic() - self._renewed_at < self.renew_deadline
                    if not kept or self.monotonic() - self._renewed_at >= self.renew_deadline:
                        self.leading = False
                        log.warning("lease.lost", lease=self.name, identity=self.identity,
                                    holder=self.holder)
                        await on_stopped()
                        interval = self.retry_interval
                    else:
                        interval = self.renew_interval
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            if self.leading:
                self.leading = False
                await on_stopped()
                await self.release()
