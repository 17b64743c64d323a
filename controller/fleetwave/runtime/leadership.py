"""Which replica leads: the elector task of `fleetwave run` on a shared store (DESIGN.md 9.3).

The election itself lives in the store (`store/leadership.py`: a lease row with an
increasing epoch on the database's clock, and the `Fence` that makes every write of the
leader conditional on that epoch). This task takes the lease, renews it every ttl/3, sets
the fence on the store while it leads, and steps down at once when a renew fails or a
write comes back `Fenced`. Followers keep trying, every ttl/3, and read the leader's
address from the lease row so the API can send writers there.

`still_leading()` is also local: the lease was taken at a monotonic instant no later than
the database's, so once `ttl` has passed on our clock without a renew, the lease may be
another replica's. A process frozen with SIGSTOP and resumed sees that at once, before
its renew reaches the database, and publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from fleetwave.metrics import Metrics
from fleetwave.protocol.messages import Command
from fleetwave.store import Store, StoreError
from fleetwave.store.leadership import Fence, Fenced, Lease, new_holder

log = structlog.get_logger("fleetwave.leadership")

ROLE = "controller"
"""The lease row of `fleetwave run` replicas (the operator's Kubernetes Lease is apart)."""

OnChange = Callable[[bool], None]


class Elector:
    """Takes, renews and gives up the `ROLE` lease; fences the store while leading."""

    def __init__(self, store: Store, metrics: Metrics, *, ttl: float = 10.0,
                 address: str | None = None, holder: str | None = None,
                 name: str = ROLE, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.metrics = metrics
        self.ttl = ttl
        """Seconds a lease lasts without a renew: failover takes at most about this long."""
        self.address = address
        self.holder = holder or new_holder()
        self.name = name
        self.clock = clock
        self.lease: Lease | None = None
        self.leader_address: str | None = None
        """The leading replica's `--advertise-url` (ours when we lead; None when unknown)."""
        self.last_error: str | None = None
        self._valid_until = 0.0
        self._listeners: list[OnChange] = []
        # Epochs start at 1: until this replica leads, every fenced write is refused.
        store.set_fence(Fence(name, self.holder, 0))
        store.on_fenced = self._fenced
        self._metrics(False)

    # -- what the rest of the process asks ------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.lease is not None

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch if self.lease is not None else None

    def still_leading(self) -> bool:
        """Leading, and the lease cannot have expired by our own clock: check this before
        every command published."""
        if self.lease is None:
            return False
        if self.clock() >= self._valid_until:
            self.step_down("the lease expired before it was renewed (was the process "
                           "paused?)")
            return False
        return True

    def on_change(self, listener: OnChange) -> None:
        """Call `listener(is_leader)` on every change of role (on the event loop)."""
        self._listeners.append(listener)

    def role(self) -> str:
        return "leader" if self.is_leader else "follower"

    # -- the task -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: renew while leading, try to lead otherwise; release on the way out."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self.tick()
                await asyncio.wait([stopped], timeout=self.ttl / 3)
        finally:
            stopped.cancel()
            await self.resign()

    async def tick(self) -> None:
        """One round: renew, or try to acquire; never raises."""
        started = self.clock()
        try:
            if self.lease is not None:
                renewed = await self.store.leases.renew(self.lease, self.ttl)
                if renewed is None:
                    self.step_down("another replica took the lease")
                    return
                self._lead(renewed, started)
                return
            got = await self.store.leases.acquire(self.name, self.holder, self.ttl,
                                                      self.address)
            if got is not None:
                self._lead(got, started)
                return
            current = await self.store.leases.current(self.name)
            self.leader_address = current.address if current is not None else None
            self.last_error = None
        except StoreError as exc:
            self.last_error = str(exc)
            if self.lease is not None:
                self.step_down(f"cannot renew the lease: {exc}")
            else:
                log.warning("leadership.store_unreachable", error=str(exc))

    def _lead(self, lease: Lease, started: float) -> None:
        became = self.lease is None
        self.lease = lease
        self.leader_address = self.address
        self.last_error = None
        self._valid_until = started + self.ttl
        self.store.set_fence(Fence(lease.name, lease.holder, lease.epoch))
        if became:
            log.info("leadership.acquired", holder=self.holder, epoch=lease.epoch,
                     address=self.address)
            self._metrics(True)
            self._notify(True)

    def step_down(self, reason: str) -> None:
        """Stop leading at once (a failed renew, a `Fenced` write, a lost lease). The store
        stays fenced with the old epoch, so a write already in flight still fails; device
        reports (unfenced) are still stored, as on every follower."""
        if self.lease is None:
            return
        log.warning("leadership.lost", holder=self.holder, epoch=self.lease.epoch,
                    reason=reason)
        self.lease = None
        self.leader_address = None
        self._valid_until = 0.0
        self._metrics(False)
        self._notify(False)

    def _fenced(self, exc: Fenced) -> None:
        self.metrics.fenced_writes.inc()
        self.step_down(str(exc))

    async def resign(self) -> None:
        """A clean stop: give the lease up so another replica leads at once."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        self._metrics(False)
        self._notify(False)
        with contextlib.suppress(StoreError):
            await self.store.leases.release(lease)
            log.info("leadership.released", holder=self.holder, epoch=lease.epoch)

    def _notify(self, leading: bool) -> None:
        for listener in self._listeners:
            try:
                listener(leading)
            except Exception:
                log.exception("leadership.listener_failed")

    def _metrics(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        if self.lease is not None:
            self.metrics.leader_epoch.set(self.lease.epoch)


class CommandPublisher(Protocol):
    async def publish_command(self, device: str, command: Command) -> None: ...

    async def clear_command(self, device: str) -> None: ...


class LeaderOnlyPublisher:
    """The engine's publisher on a replica: a command leaves only while this replica leads
    by its own clock (`Elector.still_leading`), checked before each one. What it holds back
    stays unsent in the store, and the next leader sends it (same record, same correlation
    id)."""

    def __init__(self, publisher: CommandPublisher, elector: Elector) -> None:
        self.publisher = publisher
        self.elector = elector
        self.held_back = 0

    async def publish_command(self, device: str, command: Command) -> None:
        if self._may_publish():
            await self.publisher.publish_command(device, command)

    async def clear_command(self, device: str) -> None:
        if self._may_publish():
            await self.publisher.clear_command(device)

    def _may_publish(self) -> bool:
        if self.elector.still_leading():
            return True
        if self.held_back == 0:
            log.warning("leadership.publish_held_back", holder=self.elector.holder)
        self.held_back += 1
        return False


async def lead_while_elected(elector: Elector, stop: asyncio.Event, *,
                             start: Callable[[], Awaitable[None]],
                             run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run the engine's loop only while leading. Each term first loads what the store holds
    (another leader wrote it: rollout states, records), then plans until the lease is lost
    or `stop`; losing it cancels the pass in hand at once."""
    elected = asyncio.Event()
    term = asyncio.Event()

    def changed(leading: bool) -> None:
        if leading:
            elected.set()
        else:
            term.set()

    elector.on_change(changed)
    if elector.is_leader:
        elected.set()
    while not stop.is_set():
        await _first(elected, stop)
        elected.clear()
        if stop.is_set() or not elector.is_leader:
            continue
        term.clear()

        async def lead() -> None:
            await start()
            await run(term)

        task = asyncio.create_task(lead(), name="engine-term")
        await _first(term, stop, task)
        term.set()
        if not task.done():
            task.cancel()
        for result in await asyncio.gather(task, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("leadership.term_failed", error=str(result))


async def _first(*waits: asyncio.Event | asyncio.Task[None]) -> None:
    futures = [asyncio.ensure_future(w.wait()) if isinstance(w, asyncio.Event) else w
               for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, w in zip(futures, waits, strict=True):
            if isinstance(w, asyncio.Event):
                future.cancel()


async def keep_up(elector: Elector, stop: asyncio.Event, *,
                  read_back: Callable[[], Awaitable[None]],
                  reload: Callable[[], Awaitable[None]], wake: Callable[[], None],
                  interval: float = 1.0, follower_interval: float = 5.0) -> None:
    """Read back what other replicas stored: the leader its records every `interval`
    (a status that a follower's `$share` received reaches its plan within about that),
    a follower everything every `follower_interval` (its API serves reads from memory)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            leading = elector.is_leader
            await asyncio.wait([stopped], timeout=interval if leading else follower_interval)
            if stop.is_set() or leading != elector.is_leader:
                continue  # a change of role: the new term loads what it needs itself
            try:
                await (read_back() if leading else reload())
            except StoreError as exc:
                log.warning("leadership.read_back_failed", error=str(exc))
                continue
            if leading:
                wake()
    finally:
        stopped.cancel()
