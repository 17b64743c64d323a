"""What every source (folder, git) hands the engine, and the rules they share.

A source is read continuously, and users break files: the engine must keep
running what was last valid instead of stopping a fleet-wide rollout because of
a typo in one file. So a snapshot is always built from the previous one:
`build_snapshot` is the one pure function that applies those rules, and
`PollingSource` is the one loop (poll interval, immediate trigger, capped
exponential back-off, metrics) that both sources run.

Rules (the contract users rely on):
- the file is the unit of validity: a file with any error keeps the resources of
  its last valid version (with the revision they came from) and its problems
  are reported; a new file that is invalid contributes nothing until fixed;
- a file removed from the source removes its resources;
- two resources of one kind and name: the one that was already running keeps
  running (the newcomer is reported); when neither ran before, neither runs;
- an unreachable source keeps the last synced snapshot, with `error` set.

Rollout `generation`: outside Kubernetes nobody bumps `metadata.generation`, so
the source derives it. It keeps, per Rollout name, `(generation, spec hash)`
and increments the generation when the hash changes. Names of removed Rollouts
keep their counter, so a Rollout deleted and re-added gets a new generation.
The engine persists `snapshot.generations` and passes it back as the
`generations` seed after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import structlog

from fleetwave.background import wake_or_stop
from fleetwave.metrics import Metrics
from fleetwave.resources.generations import count_generation
from fleetwave.resources.inventory import merge_inventories
from fleetwave.resources.loading import LoadedDocument, LoadResult, Problem
from fleetwave.resources.model import DeviceInventory, Rollout, RolloutPolicy
from fleetwave.resources.names import name_keeper

log = structlog.get_logger("fleetwave.sources")

Generations = Mapping[str, tuple[int, str]]
"""Rollout name -> (generation, spec hash) as the source last derived it."""

OnSnapshot = Callable[["SourceSnapshot"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """The desired state read from one source at one revision.

    Never holds a secret: `source` is a display name with credentials removed.
    """

    source: str
    """Display name (folder path, or git URL without userinfo); also the metric label."""
    kind: str
    """`git` or `folder`."""
    revision: str | None = None
    """Commit id, or a content digest of the folder; None before the first good sync."""
    rollouts: Mapping[str, Rollout] = field(default_factory=dict)
    policies: Mapping[str, RolloutPolicy] = field(default_factory=dict)
    inventories: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Every DeviceInventory merged: uuid -> labels (they win over reported labels)."""
    problems: tuple[Problem, ...] = ()
    """Errors and warnings of the files at `revision`, located by file, line and field."""
    synced_at: float | None = None
    """Epoch seconds of the last successful sync."""
    error: str | None = None
    """Why the last sync failed (source unreachable, branch missing, ...); None when it worked."""
    files: Mapping[str, tuple[LoadedDocument, ...]] = field(default_factory=dict)
    """Per file, the documents of its last valid version: the memory behind 'keep running'."""
    generations: Generations = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the last sync worked and every file is valid."""
        return self.error is None and not any(p.severity == "error" for p in self.problems)

    @property
    def invalid_files(self) -> tuple[str, ...]:
        return tuple(sorted({p.file for p in self.problems if p.severity == "error"}))


@runtime_checkable
class Source(Protocol):
    """A home of Rollouts that the engine reads; `sync` never raises for user-caused problems."""

    @property
    def name(self) -> str: ...

    @property
    def snapshot(self) -> SourceSnapshot | None: ...

    async def sync(self) -> SourceSnapshot: ...

    def trigger(self) -> None: ...

    async def run(self, on_snapshot: OnSnapshot, stop: asyncio.Event | None = None) -> None: ...


class SourceError(Exception):
    """The source could not be read at all (unreachable, branch missing, bad credentials).

    The message is shown to users: it says what to check and never holds a secret.
    """


def build_snapshot(
    *,
    source: str,
    kind: str,
    revision: str,
    files: Mapping[str, LoadResult],
    previous: SourceSnapshot | None,
    synced_at: float,
    generations: Generations | None = None,
) -> SourceSnapshot:
    """Apply the source rules (module docstring) to the files read at `revision`."""
    prev_files = previous.files if previous is not None else {}
    kept: dict[str, tuple[LoadedDocument, ...]] = {}
    problems: list[Problem] = []
    for path in sorted(files):
        result = files[path]
        problems.extend(result.problems)
        if result.ok:
            kept[path] = tuple(result.documents)
        elif path in prev_files:
            kept[path] = prev_files[path]
    documents, duplicates = _resolve_duplicates(kept, prev_files)
    problems.extend(duplicates)

    rollouts: dict[str, Rollout] = {}
    policies: dict[str, RolloutPolicy] = {}
    inventory_docs: list[Mapping[str, Mapping[str, str]]] = []
    base = previous.generations if previous is not None else (generations or {})
    gens: dict[str, tuple[int, str]] = dict(base)
    for doc in documents:
        res = doc.resource
        if isinstance(res, Rollout):
            number = count_generation(gens.get(res.name), res.spec_hash)
            gens[res.name] = (number, res.spec_hash)
            rollouts[res.name] = replace(res, generation=number)
        elif isinstance(res, RolloutPolicy):
            policies[res.name] = res
        elif isinstance(res, DeviceInventory):
            inventory_docs.append(res.labels)  # in file order: a later one wins
    inventories = merge_inventories(inventory_docs)
    return SourceSnapshot(
        source=source, kind=kind, revision=revision, rollouts=rollouts, policies=policies,
        inventories=inventories, problems=tuple(problems), synced_at=synced_at, error=None,
        files=kept, generations=gens,
    )


def _resolve_duplicates(
    kept: Mapping[str, tuple[LoadedDocument, ...]],
    prev_files: Mapping[str, tuple[LoadedDocument, ...]],
) -> tuple[list[LoadedDocument], list[Problem]]:
    """Keep one document per (kind, name): the one that ran before, or none when ambiguous."""
    owner: dict[tuple[str, str], str] = {}
    for path, docs in prev_files.items():
        for d in docs:
            owner.setdefault((type(d.resource).__name__, d.resource.name), path)
    groups: dict[tuple[str, str], list[LoadedDocument]] = {}
    for path in sorted(kept):
        for d in kept[path]:
            groups.setdefault((type(d.resource).__name__, d.resource.name), []).append(d)
    chosen: set[int] = set()
    problems: list[Problem] = []
    for key, group in groups.items():
        if len(group) == 1:
            chosen.add(id(group[0]))
            continue
        keeper = name_keeper([d.file for d in group], owner.get(key))
        winner = next((d for d in group if d.file == keeper), None)
        if winner is not None:
            chosen.add(id(winner))
        places = ", ".join(f"{d.file}:{d.line}" for d in group)
        for d in group:
            if d is winner:
                continue
            keeps = (f"; {winner.file}:{winner.line} keeps running" if winner is not None
                     else "; neither copy runs until one is renamed or removed")
            problems.append(Problem(
                d.file, d.line, None, "metadata.name",
                f"duplicate {key[0]} name {key[1]!r} (defined at {places}): names must be "
                f"unique in one source{keeps}", name=key[1]))
    documents = [d for path in sorted(kept) for d in kept[path] if id(d) in chosen]
    return documents, problems


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential delay between failed syncs, so a dead remote is not hammered."""

    initial: float = 1.0
    """Seconds before the first retry after a failure."""
    maximum: float = 300.0
    """Seconds: the cap; five minutes keeps recovery prompt without flooding logs."""
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * self.factor ** (failures - 1)))


class PollingSource:
    """The shared sync loop: poll interval as a safety net, trigger for now, back-off on errors.

    Subclasses implement `_read()`, which runs off the event loop and returns the
    revision and the per-file load results, or raises `SourceError`.
    """

    kind = "folder"

    def __init__(
        self,
        name: str,
        *,
        poll_interval: float,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        generations: Generations | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff(initial=min(1.0, poll_interval),
                                          maximum=max(300.0, poll_interval))
        self._metrics = metrics
        self._seed = generations
        self._clock = clock
        self._snapshot: SourceSnapshot | None = None
        self._failures = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._metric_revision: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def snapshot(self) -> SourceSnapshot | None:
        return self._snapshot

    @property
    def failures(self) -> int:
        """Consecutive failed syncs; 0 after a good one."""
        return self._failures

    def trigger(self) -> None:
        """Make the loop in `run` sync now (a webhook arrived) instead of at the next poll."""
        self._wake.set()

    def next_delay(self) -> float:
        """Seconds until the next sync: the poll interval, or the back-off after failures."""
        return self.backoff.delay(self._failures) if self._failures else self.poll_interval

    async def _read(self) -> tuple[str, Mapping[str, LoadResult]]:
        raise NotImplementedError

    async def sync(self) -> SourceSnapshot:
        """Read the source once; on failure keep the last snapshot with `error` set."""
        async with self._lock:
            previous = self._snapshot
            try:
                revision, files = await self._read()
            except SourceError as exc:
                return self._failed(previous, str(exc))
            except Exception as exc:  # a bug or an unforeseen library error: keep running
                log.exception("source.sync_crashed", source=self._name)
                return self._failed(previous, f"unexpected error: {type(exc).__name__}")
            snapshot = build_snapshot(
                source=self._name, kind=self.kind, revision=revision, files=files,
                previous=previous, synced_at=self._clock(), generations=self._seed)
            self._failures = 0
            self._snapshot = snapshot
            self._record_success(snapshot, previous)
            return snapshot

    def _failed(self, previous: SourceSnapshot | None, message: str) -> SourceSnapshot:
        self._failures += 1
        base = previous or SourceSnapshot(source=self._name, kind=self.kind,
                                          generations=dict(self._seed or {}))
        snapshot = replace(base, error=message)
        self._snapshot = snapshot
        if self._metrics is not None:
            self._metrics.source_sync_errors.labels(source=self._name).inc()
        log.warning("source.sync_failed", source=self._name, error=message,
                    failures=self._failures, retry_in=round(self.next_delay(), 3))
        return snapshot

    def _record_success(self, snapshot: SourceSnapshot, previous: SourceSnapshot | None) -> None:
        m = self._metrics
        if m is not None:
            if self._metric_revision not in (None, snapshot.revision):
                with contextlib.suppress(KeyError):
                    m.source_revision.remove(self._name, self._metric_revision)
            m.source_revision.labels(source=self._name, revision=snapshot.revision).set(1)
            self._metric_revision = snapshot.revision
            if snapshot.synced_at is not None:
                m.source_last_sync.labels(source=self._name).set(snapshot.synced_at)
            m.source_invalid_files.labels(source=self._name).set(len(snapshot.invalid_files))
        if previous is None or previous.revision != snapshot.revision or previous.error:
            log.info("source.synced", source=self._name, revision=snapshot.revision,
                     rollouts=len(snapshot.rollouts), invalid_files=list(snapshot.invalid_files))

    async def run(self, on_snapshot: OnSnapshot, stop: asyncio.Event | None = None) -> None:
        """Sync until `stop` is set (or the task is cancelled); call `on_snapshot` on change.

        A change is a new revision, a new set of problems, or the error appearing,
        changing or clearing; an unchanged poll is silent.
        """
        stop = stop or asyncio.Event()
        delivered: tuple[object, ...] | None = None
        while not stop.is_set():
            self._wake.clear()
            snapshot = await self.sync()
            key = (snapshot.revision, snapshot.error, snapshot.problems)
            if key != delivered:
                delivered = key
                outcome = on_snapshot(snapshot)
                if inspect.isawaitable(outcome):
                    await outcome
            await wake_or_stop(self._wake, stop, self.next_delay())

