"""Stage 1, classify: every per-device rule of a pass, and the table of what each verdict means.

A targeted device ends a pass in exactly one `Outcome`, decided from its reported
version and its attempts (the newest update, the newest rollback, the retries of
this generation). What an outcome implies for the rollout (which status count it
adds to, whether it holds its step open, whether it is a failure, terminal for the
failure rate, done) is one row of `EFFECTS`, as h11 keeps its state machine in
tables; the rules that pick the outcome are the functions below, and nothing else
in the planner looks at a device's records. Deciding may also produce actions
(timeouts, health verdicts, cancels, rollbacks), collected in `Decisions`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from fleetwave.planner.conditions import DecisionReason
from fleetwave.planner.context import PassContext, container_checks_pass, is_offline, was_failure
from fleetwave.planner.model import (
    Action,
    ClearCommand,
    Decide,
    DeviceView,
    Republish,
    SendCancel,
    SendRollback,
)
from fleetwave.protocol.messages import CommandAction
from fleetwave.resources.vocabulary import Operation
from fleetwave.updates.model import (
    Decision,
    DecisionKind,
    Health,
    Reason,
    UpdateRecord,
    UpdateState,
)


class Outcome(IntEnum):
    """Where one targeted device stands at the end of a pass."""

    UP_TO_DATE = 0
    """Already reports the version, without an attempt of ours."""
    NEEDS_UPDATE = 1
    SUPERSEDED = 2
    """An open attempt to another version: cancelled now; the device waits for this one."""
    CANCELLED_FOR_ROLLBACK = 3
    PENDING = 4
    ACKNOWLEDGED = 5
    SCHEDULED = 6
    IN_PROGRESS = 7
    UNREACHABLE = 8
    """Timed out while offline: not a failure; retried when it comes back."""
    UNREACHABLE_DONE = 9
    """Timed out offline, but reports the version now."""
    TIMED_OUT = 10
    FAILED = 11
    AWAITING_HEALTH = 12
    """Succeeded; stableFor, a check or its new state is still to come."""
    HEALTHY = 13
    DRIFTED = 14
    """Healthy once, reports another version now: sent again, not a failure."""
    UNHEALTHY = 15
    PARKED = 16
    """Failed retries + 1 times in this generation: the penalty box."""
    CANCELLED = 17
    """Cancelled by a user, or the rollout is rolled back: left alone."""
    CANCELLED_DONE = 18
    CANCELLED_RETRY = 19
    ROLLED_BACK = 20
    ROLLED_BACK_FAILURE = 21
    AWAITING_RESTART = 22
    """Reported success of a confirmAfterRestart update; in flight until a restart shows."""
    DOWNLOADING = 23
    """`action: download` open (strategy.download): fetching ahead of the install window."""
    DOWNLOADED = 24
    """Downloaded in this generation, waiting for its install window (a candidate)."""


@dataclass(frozen=True, slots=True)
class Effect:
    """What one device in an outcome adds to the rollout's tally and step machine."""

    count: str | None
    """The `status.counts` key it adds to."""
    holds_step: bool = False
    """Not finished yet: the step it belongs to cannot end."""
    failure: bool = False
    terminal: bool = False
    """Counts in the failure rate's denominator."""
    done: bool = False
    """Counts in `status.done` (at the version and healthy, or there already)."""
    in_flight: bool = False
    """Occupies a maxInFlight slot."""


_O = Outcome
EFFECTS: Mapping[Outcome, Effect] = {
    _O.UP_TO_DATE: Effect("upToDate", done=True),
    _O.NEEDS_UPDATE: Effect(None, holds_step=True),
    _O.SUPERSEDED: Effect("cancelled", holds_step=True),
    _O.CANCELLED_FOR_ROLLBACK: Effect("cancelled"),
    _O.PENDING: Effect("pending", holds_step=True, in_flight=True),
    _O.ACKNOWLEDGED: Effect("acknowledged", holds_step=True, in_flight=True),
    _O.SCHEDULED: Effect("scheduled", holds_step=True, in_flight=True),
    _O.IN_PROGRESS: Effect("in_progress", holds_step=True, in_flight=True),
    _O.UNREACHABLE: Effect("unreachable"),
    _O.UNREACHABLE_DONE: Effect("unreachable", done=True),
    _O.TIMED_OUT: Effect("timeout", holds_step=True, failure=True, terminal=True),
    _O.FAILED: Effect("failed", holds_step=True, failure=True, terminal=True),
    _O.AWAITING_HEALTH: Effect("succeeded", holds_step=True),
    _O.HEALTHY: Effect("succeeded", terminal=True, done=True),
    _O.DRIFTED: Effect("succeeded", terminal=True),
    _O.UNHEALTHY: Effect("unhealthy", failure=True, terminal=True),
    _O.PARKED: Effect("parked", failure=True, terminal=True),
    _O.CANCELLED: Effect("cancelled"),
    _O.CANCELLED_DONE: Effect("cancelled", done=True),
    _O.CANCELLED_RETRY: Effect("cancelled", holds_step=True),
    _O.ROLLED_BACK: Effect("rolled_back"),
    _O.ROLLED_BACK_FAILURE: Effect("rolled_back", failure=True, terminal=True),
    _O.AWAITING_RESTART: Effect("awaiting_restart", holds_step=True, in_flight=True),
    _O.DOWNLOADING: Effect("downloading", holds_step=True),
    _O.DOWNLOADED: Effect("downloaded", holds_step=True),
}
"""Data table (exempt from the function-length rule): one row per outcome."""
del _O

HOLDS_STEP = tuple(EFFECTS[o].holds_step for o in Outcome)
"""EFFECTS[o].holds_step by index, for the per-device loop."""
IN_FLIGHT = tuple(EFFECTS[o].in_flight for o in Outcome)
"""EFFECTS[o].in_flight by index: which devices count against a per-label budget."""

_OPEN_OUTCOME = {UpdateState.PENDING: Outcome.PENDING,
                 UpdateState.ACKNOWLEDGED: Outcome.ACKNOWLEDGED,
                 UpdateState.SCHEDULED: Outcome.SCHEDULED,
                 UpdateState.IN_PROGRESS: Outcome.IN_PROGRESS,
                 UpdateState.AWAITING_RESTART: Outcome.AWAITING_RESTART}
_ROLLBACK_DONE = frozenset({UpdateState.SUCCEEDED, UpdateState.ROLLED_BACK})

Verdict = tuple[Outcome, int]
"""An outcome and the attempt number to send now (0: nothing to send)."""


class Decisions:
    """What classifying devices decided besides outcomes: actions, wake-ups, new parkings.

    The only mutable value of stage 1: written while `walk` runs, read-only after (it
    travels in `Walk`; later stages return their own values instead).
    """

    __slots__ = ("actions", "extra_in_flight", "fetched", "newly_parked", "now", "wake")

    def __init__(self, now: float) -> None:
        self.now = now
        self.actions: list[Action] = []
        self.wake: float | None = None
        self.newly_parked: set[str] = set()
        self.extra_in_flight = 0
        """Open or just-sent rollbacks, and attempts of untargeted devices still open."""
        self.fetched: set[str] = set()
        """Devices with a download attempt (any state) of this generation's version: they
        get no other download (a failed one is fetched again by the install itself)."""

    def wake_at(self, t: float) -> None:
        if t > self.now and (self.wake is None or t < self.wake):
            self.wake = t

    def decide(self, record: UpdateRecord, kind: DecisionKind, reason: str | None = None,
               message: str | None = None) -> None:
        self.actions.append(Decide(record.id, Decision(kind, self.now, reason, message)))

    def cancel(self, ctx: PassContext, record: UpdateRecord, reason: str) -> None:
        self.actions.append(SendCancel(record, ctx.command(record, "cancel")))
        self.decide(record, DecisionKind.CANCEL, reason)

    def rollback(self, ctx: PassContext, record: UpdateRecord) -> None:
        rb = ctx.rollback_record(record)
        self.actions.append(SendRollback(rb, ctx.command(rb, "rollback")))
        self.extra_in_flight += 1


# -- open attempts --------------------------------------------------------------------------


_COMMAND_OF: Mapping[str, CommandAction] = {Operation.ROLLBACK: "rollback",
                                            Operation.DOWNLOAD: "download"}
"""The command a record's re-publish carries (an update's is `update`)."""


def keep_open(ctx: PassContext, out: Decisions, record: UpdateRecord,
              device: DeviceView | None) -> bool:
    """Timeouts and re-publishing of an open attempt; True if it is still open after."""
    now, health = ctx.now, ctx.health
    if record.state == UpdateState.PENDING:
        deadline = record.created_at + health.ack_timeout.total_seconds()
        offline = is_offline(device, now)
        if now >= deadline:
            out.decide(record, DecisionKind.TIMEOUT,
                       Reason.UNREACHABLE if offline else Reason.ACK_TIMEOUT)
            out.actions.append(ClearCommand(record.device))
            return False
        out.wake_at(deadline)
        if not offline:
            every = health.ack_timeout.total_seconds() / 4
            # Never sent (a controller stopped between storing the record and
            # publishing it): send now, with the same correlation id.
            if record.sent_at is None or now >= record.sent_at + every:
                action = _COMMAND_OF.get(record.action, "update")
                out.actions.append(Republish(record, ctx.command(record, action)))
                out.wake_at(now + every)
            else:
                out.wake_at(record.sent_at + every)
        return True
    if record.state == UpdateState.SCHEDULED and record.scheduled_time:
        return True  # the device chose a time; updateTimeout counts from its start
    base = record.started_at or record.scheduled_at or record.acknowledged_at \
        or record.created_at
    deadline = base + health.update_timeout.total_seconds()
    if now >= deadline:
        if record.state == UpdateState.AWAITING_RESTART:
            out.decide(record, DecisionKind.TIMEOUT, Reason.NO_RESTART, _no_restart(record))
        else:
            out.decide(record, DecisionKind.TIMEOUT, Reason.UPDATE_TIMEOUT)
        out.actions.append(ClearCommand(record.device))
        return False
    out.wake_at(deadline)
    return True


def _no_restart(record: UpdateRecord) -> str:
    if record.boot_id is None:
        return ("confirmAfterRestart: the device reports no boot_id, so a restart on "
                f"{record.to_version} cannot be confirmed")
    return (f"confirmAfterRestart: the device reported success but no state on "
            f"{record.to_version} after a restart within updateTimeout")


def orphan(ctx: PassContext, out: Decisions, recs: Sequence[UpdateRecord],
           device: DeviceView | None) -> None:
    """Attempts of a device no longer targeted: they may finish or time out, nothing new."""
    for r in recs:
        if r.is_open:
            if r.action == Operation.DOWNLOAD:
                out.cancel(ctx, r, Reason.SUPERSEDED)  # not targeted: nothing to install
            elif r.action == "update" and r.to_version != ctx.version:
                out.cancel(ctx, r, Reason.SUPERSEDED)
            elif keep_open(ctx, out, r, device):
                out.extra_in_flight += 1


# -- one device with attempts ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempts:
    """A device's records for this rollout, read once: what every rule below looks at."""

    device: DeviceView
    reported: str | None
    records: Sequence[UpdateRecord]
    latest: UpdateRecord | None
    """The newest update attempt (any generation)."""
    rollback: UpdateRecord | None
    """The newest rollback."""
    max_attempt: int
    """Highest attempt number of this generation (the next one is max_attempt + 1)."""
    download: UpdateRecord | None = None
    """The newest download (strategy.download), any generation."""

    @classmethod
    def of(cls, ctx: PassContext, device: DeviceView,
           recs: Sequence[UpdateRecord]) -> Attempts:
        latest: UpdateRecord | None = None
        rollback: UpdateRecord | None = None
        download: UpdateRecord | None = None
        max_attempt = 0
        for r in recs:
            if r.action == Operation.DOWNLOAD:
                if download is None or r.created_at >= download.created_at:
                    download = r
                continue
            if r.action == "rollback":
                if rollback is None or (r.created_at, r.attempt) > (rollback.created_at,
                                                                     rollback.attempt):
                    rollback = r
                continue
            if r.generation == ctx.generation and r.attempt > max_attempt:
                max_attempt = r.attempt
            if latest is None or (r.created_at, r.attempt) > (latest.created_at, latest.attempt):
                latest = r
        return cls(device, device.versions.get(ctx.component), recs, latest, rollback,
                   max_attempt, download)

    @property
    def next_attempt(self) -> int:
        return self.max_attempt + 1


def classify(ctx: PassContext, out: Decisions, device: DeviceView,
             recs: Sequence[UpdateRecord]) -> Verdict:
    """The outcome of a device that has records for this rollout."""
    a = Attempts.of(ctx, device, recs)
    if a.download is None:
        return _classify(ctx, out, a)
    download = a.download
    current = (download.generation == ctx.generation
               and download.to_version == ctx.target_for(a.reported))
    if download.is_open and (a.latest is None or not a.latest.is_open):
        if not current or ctx.rollback_all:
            out.cancel(ctx, download, Reason.SUPERSEDED)
        elif keep_open(ctx, out, download, device):
            out.fetched.add(device.uuid)
            return Outcome.DOWNLOADING, 0
    if current:
        out.fetched.add(device.uuid)
    outcome, attempt = _classify(ctx, out, a)
    if (outcome is Outcome.NEEDS_UPDATE and current
            and download.state == UpdateState.SUCCEEDED):
        return Outcome.DOWNLOADED, attempt  # installs first when its window opens
    return outcome, attempt


def _classify(ctx: PassContext, out: Decisions, a: Attempts) -> Verdict:
    """The outcome of a device by its update and rollback attempts."""
    device, rollback, latest = a.device, a.rollback, a.latest
    if rollback is not None and rollback.is_open and keep_open(ctx, out, rollback, device):
        out.extra_in_flight += 1
    if latest is None:
        return fresh(ctx, a.reported, 1)
    if latest.is_open:
        return _open(ctx, out, a, latest)
    if rollback is not None and rollback.state in _ROLLBACK_DONE \
            and latest.state != UpdateState.ROLLED_BACK \
            and rollback.created_at >= latest.created_at:
        out.decide(latest, DecisionKind.ROLLED_BACK)
    if latest.to_version != ctx.version or latest.component != ctx.component:
        if ctx.hops and latest.component == ctx.component:
            via = _via(ctx, out, a, latest)
            if via is not None:
                return via
        return fresh(ctx, a.reported, a.next_attempt)
    has_rollback = _rollback_requested(ctx, out, a, latest)
    state = latest.state
    if state == UpdateState.SUCCEEDED:
        return _succeeded(ctx, out, a, latest, has_rollback)
    if state == UpdateState.TIMEOUT and latest.reason == Reason.UNREACHABLE:
        if a.reported == ctx.version and not ctx.force:
            return Outcome.UNREACHABLE_DONE, 0
        online = not is_offline(device, ctx.now)
        return Outcome.UNREACHABLE, a.next_attempt if online else 0
    if state in (UpdateState.FAILED, UpdateState.TIMEOUT):
        return _failed(ctx, out, a, latest, has_rollback)
    if state == UpdateState.CANCELLED:
        if latest.reason == Reason.CANCELLED_BY_USER or ctx.rollback_all:
            return Outcome.CANCELLED, 0
        outcome, attempt = fresh(ctx, a.reported, a.next_attempt)
        return (Outcome.CANCELLED_DONE if outcome is Outcome.UP_TO_DATE
                else Outcome.CANCELLED_RETRY), attempt
    # ROLLED_BACK: deliberately put back; not retried in this generation.
    return (Outcome.ROLLED_BACK_FAILURE if was_failure(latest) else Outcome.ROLLED_BACK), 0


def fresh(ctx: PassContext, reported: str | None, attempt: int) -> Verdict:
    """No attempt at this version: done if already there, else a candidate."""
    if reported == ctx.version and not ctx.force:
        return Outcome.UP_TO_DATE, 0
    return Outcome.NEEDS_UPDATE, attempt


def _open(ctx: PassContext, out: Decisions, a: Attempts, latest: UpdateRecord) -> Verdict:
    want = ctx.version
    if ctx.hops:
        # A device already reporting the attempt's own version (a `via` installed, its
        # restart still to come) is finishing that attempt, not asking for the next one.
        want = latest.to_version if a.reported == latest.to_version \
            else ctx.target_for(a.reported)
    if latest.to_version != want or latest.component != ctx.component:
        out.cancel(ctx, latest, Reason.SUPERSEDED)
        return Outcome.SUPERSEDED, 0
    if ctx.rollback_all:
        out.cancel(ctx, latest, DecisionReason.ROLLOUT_ROLLED_BACK)
        return Outcome.CANCELLED_FOR_ROLLBACK, 0
    if keep_open(ctx, out, latest, a.device):
        return _OPEN_OUTCOME[latest.state], 0
    # Timed out just now: unreachable waits for the device, a failure is retried.
    return (Outcome.UNREACHABLE if is_offline(a.device, ctx.now) else Outcome.TIMED_OUT), 0


def _via(ctx: PassContext, out: Decisions, a: Attempts, latest: UpdateRecord) -> Verdict | None:
    """A finished attempt to a mandatory intermediate version (None: go on to the next).

    Its failures count and retry like any attempt's; its success waits for the state
    that shows the intermediate version, then the device is a candidate for the next
    version (`fresh`, with the next attempt number).
    """
    if latest.state == UpdateState.SUCCEEDED:
        return (Outcome.AWAITING_HEALTH, 0) if a.reported != latest.to_version else None
    if latest.to_version != ctx.target_for(a.reported):
        return None  # an attempt the device has moved past (or another version's)
    if latest.state == UpdateState.TIMEOUT and latest.reason == Reason.UNREACHABLE:
        return Outcome.UNREACHABLE, 0 if is_offline(a.device, ctx.now) else a.next_attempt
    if latest.state in (UpdateState.FAILED, UpdateState.TIMEOUT):
        return _failed(ctx, out, a, latest, _rollback_requested(ctx, out, a, latest))
    return None


def _touched(a: Attempts, latest: UpdateRecord) -> bool:
    """We saw it start or succeed, or the device reports the new version anyway (a cancel
    that arrived after the device had begun, so it finished regardless)."""
    return (latest.state == UpdateState.SUCCEEDED or latest.started_at is not None
            or (a.reported is not None and a.reported == latest.to_version))


def _rollback_requested(ctx: PassContext, out: Decisions, a: Attempts,
                        latest: UpdateRecord) -> bool:
    """Whether the device has (or now gets) a rollback of `latest`."""
    rollback = a.rollback
    if rollback is not None and rollback.created_at >= latest.created_at:
        return True
    if ((ctx.rollback_all or a.device.uuid in ctx.rollback_devices) and _touched(a, latest)
            and latest.from_version is not None and a.reported != latest.from_version
            and latest.state != UpdateState.ROLLED_BACK):
        out.rollback(ctx, latest)
        return True
    return False


def _succeeded(ctx: PassContext, out: Decisions, a: Attempts, latest: UpdateRecord,
               has_rollback: bool) -> Verdict:
    done_at = latest.completed_at or latest.updated_at
    offline_window = done_at + ctx.policy.offline_after_update.total_seconds()
    if latest.health == Health.UNKNOWN:
        verdict = _judge(ctx, out, latest, a, done_at, offline_window)
        if verdict is None:
            return Outcome.AWAITING_HEALTH, 0
        if verdict:
            return Outcome.HEALTHY, 0
        return _unhealthy(ctx, out, a, latest, has_rollback)
    if latest.health == Health.HEALTHY:
        if ctx.now <= offline_window and is_offline(a.device, ctx.now):
            out.decide(latest, DecisionKind.UNHEALTHY, Reason.OFFLINE_AFTER_UPDATE,
                       "device went silent after reporting success")
            return _unhealthy(ctx, out, a, latest, has_rollback)
        if a.reported is not None and a.reported != ctx.version and not has_rollback:
            return Outcome.DRIFTED, a.next_attempt  # bring it back; not a failure
        return Outcome.HEALTHY, 0
    return _unhealthy(ctx, out, a, latest, has_rollback)


def _judge(ctx: PassContext, out: Decisions, record: UpdateRecord, a: Attempts,
           done_at: float, offline_window: float) -> bool | None:
    """Health of a success: True healthy, False unhealthy (decided here), None not yet."""
    now, device, reported = ctx.now, a.device, a.reported
    ext = ctx.check_results.get((ctx.name, device.uuid)) if ctx.external_checks else True
    if ext is False:
        out.decide(record, DecisionKind.UNHEALTHY, Reason.CHECK_FAILED, "a health check failed")
        return False
    if now <= offline_window and is_offline(device, now):
        out.decide(record, DecisionKind.UNHEALTHY, Reason.OFFLINE_AFTER_UPDATE,
                   "device went silent after reporting success")
        return False
    stable_at = done_at + ctx.health.stable_for.total_seconds()
    if now < stable_at:
        out.wake_at(stable_at)
        return None
    if reported != ctx.version:
        state_at = device.state_received_at
        if state_at is not None and state_at < done_at and now < offline_window:
            # The success status outran the device's new retained state (they are
            # separate messages): wait for the state, up to offlineAfterUpdate.
            out.wake_at(offline_window)
            return None
        out.decide(record, DecisionKind.UNHEALTHY, DecisionReason.VERSION_MISMATCH,
                   f"device reports {reported!r} after succeeding on {ctx.version!r}")
        return False
    if ctx.container_checks and not container_checks_pass(ctx.container_checks, device,
                                                          ctx.version):
        out.decide(record, DecisionKind.UNHEALTHY, Reason.CHECK_FAILED,
                   "a container check failed")
        return False
    if ext is None:
        return None
    out.decide(record, DecisionKind.HEALTHY)
    return True


def _unhealthy(ctx: PassContext, out: Decisions, a: Attempts, latest: UpdateRecord,
               has_rollback: bool) -> Verdict:
    _rollback_failed(ctx, out, a, latest, has_rollback, touched=True)
    return Outcome.UNHEALTHY, 0


def _failed(ctx: PassContext, out: Decisions, a: Attempts, latest: UpdateRecord,
            has_rollback: bool) -> Verdict:
    uuid = a.device.uuid
    since = ctx.released.get(uuid)
    failed = sum(1 for r in a.records if r.action == "update" and r.generation == ctx.generation
                 and (since is None or r.created_at >= since) and was_failure(r))
    if failed >= ctx.policy.retries + 1:
        if uuid not in ctx.parked:
            out.newly_parked.add(uuid)
        _rollback_failed(ctx, out, a, latest, has_rollback, touched=_touched(a, latest))
        return Outcome.PARKED, 0
    outcome = Outcome.FAILED if latest.state == UpdateState.FAILED else Outcome.TIMED_OUT
    retry_at = (latest.completed_at or latest.updated_at) + \
        ctx.policy.retry_backoff.total_seconds() * 2 ** max(0, failed - 1)
    if ctx.now >= retry_at:
        return outcome, a.next_attempt
    out.wake_at(retry_at)
    return outcome, 0


def _rollback_failed(ctx: PassContext, out: Decisions, a: Attempts, record: UpdateRecord,
                     has_rollback: bool, *, touched: bool) -> None:
    """rollbackFailedDevices: put a failed device back on the version it came from."""
    if (ctx.policy.rollback_failed_devices and touched and not has_rollback
            and record.from_version is not None and a.reported is not None
            and a.reported != record.from_version and not ctx.rollback_all):
        out.rollback(ctx, record)


# -- the walk over targeted devices ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walk:
    """Stage 1's result: every targeted device's outcome, hashed into the wave order."""

    outcomes: tuple[int, ...]
    """Devices per Outcome (indexed by the outcome's value)."""
    open_hashes: list[int]
    """Wave hashes of devices whose outcome holds their step open (but `fresh` ones)."""
    candidates: list[tuple[int, DeviceView, int]]
    """(wave hash, device, attempt) of devices that need a command, if their step runs
    (but `fresh` ones)."""
    fresh_hashes: list[int]
    fresh: list[DeviceView]
    """Untouched devices not at the version (NEEDS_UPDATE without records), with their
    hashes: they hold their step open and want attempt 1. Kept apart so that the
    commonest device of a rollout under way costs two appends, not a tuple."""
    decisions: Decisions = field(compare=False)
    busy: list[DeviceView] = field(default_factory=list)
    """Devices occupying a slot (an open update or rollback, targeted or not): what the
    per-label budgets count."""

    def open_through(self, limits: Sequence[int], steps: int) -> list[int]:
        """Devices holding steps 0..i open, for each step i (limits are cumulative)."""
        return [sum(map(cut.__ge__, self.open_hashes)) + sum(map(cut.__ge__, self.fresh_hashes))
                for cut in limits[:steps]]

    def candidates_up_to(self, cut: int) -> Iterator[tuple[int, DeviceView, int]]:
        """(hash, device, attempt) of every candidate with a hash of at most `cut`."""
        yield from (c for c in self.candidates if c[0] <= cut)
        yield from ((h, d, 1) for h, d in zip(self.fresh_hashes, self.fresh, strict=True)
                    if h <= cut)


def walk(ctx: PassContext, devices: Sequence[DeviceView], hashes: Sequence[int],
         records: Mapping[str, Sequence[UpdateRecord]],
         all_devices: Mapping[str, DeviceView]) -> Walk:
    """Classify every targeted device (and the attempts of untargeted ones), once each.

    Most devices are untouched, already there, or done and healthy: those three take
    the short paths inline (the same verdicts `classify` would reach), so a pass over
    a million devices stays a single cheap loop. `hashes` are the devices' wave hashes
    in the same order (HashCache.wave_hashes).
    """
    out = Decisions(ctx.now)
    n = [0] * len(Outcome)
    open_hashes: list[int] = []
    candidates: list[tuple[int, DeviceView, int]] = []
    fresh_hashes: list[int] = []
    fresh: list[DeviceView] = []
    busy: list[DeviceView] = []
    append_open, append_cand = open_hashes.append, candidates.append
    append_fresh_hash, append_fresh = fresh_hashes.append, fresh.append
    version, component, force, now = ctx.version, ctx.component, ctx.force, ctx.now
    succeeded, healthy = UpdateState.SUCCEEDED, Health.HEALTHY
    quick_ok = not ctx.rollback_all and not ctx.rollback_devices
    offline_after = ctx.policy.offline_after_update.total_seconds()
    up_to_date = fast_done = matched = 0
    get_records = records.get
    for d, h in zip(devices, hashes, strict=True):
        recs = get_records(d.uuid)
        if recs:
            matched += 1
            if len(recs) == 1 and quick_ok:
                r0 = recs[0]
                if (r0.state is succeeded and r0.health is healthy and r0.to_version == version
                        and d.versions.get(component) == version and r0.action == "update"
                        and r0.component == component
                        and (d.online is True or now > (r0.completed_at or r0.updated_at)
                             + offline_after)):
                    fast_done += 1  # Outcome.HEALTHY
                    continue
            extra = out.extra_in_flight
            outcome, attempt = classify(ctx, out, d, recs)
            n[outcome] += 1
            if IN_FLIGHT[outcome] or out.extra_in_flight != extra:
                busy.append(d)
            if HOLDS_STEP[outcome]:
                append_open(h)
            if attempt:
                append_cand((h, d, attempt))
            continue
        if not force and d.versions.get(component) == version:
            up_to_date += 1  # Outcome.UP_TO_DATE
            continue
        append_fresh_hash(h)  # Outcome.NEEDS_UPDATE
        append_fresh(d)
    n[Outcome.UP_TO_DATE] += up_to_date
    n[Outcome.HEALTHY] += fast_done
    n[Outcome.NEEDS_UPDATE] += len(devices) - sum(n)
    if matched < len(records):
        targeted_ids = {d.uuid for d in devices}
        for u, recs in records.items():
            if u not in targeted_ids:
                extra, known = out.extra_in_flight, all_devices.get(u)
                orphan(ctx, out, recs, known)
                if known is not None and out.extra_in_flight != extra:
                    busy.append(known)
    return Walk(tuple(n), open_hashes, candidates, fresh_hashes, fresh, out, busy)
