"""plan(desired, observed, now) -> Plan: the whole reconcile decision, as a pure function.

One pass walks each rollout's targeted devices once: it classifies every device
(from its reported version and its attempts), collects the actions that follow
from the clock (timeouts, health verdicts, retries), then moves the rollout's
step machine and picks the devices to command, lowest wave hash first, within
maxInFlight, pacing, windows and freezes. The engine executes the actions; a
second call with the same inputs returns the same plan (ids included), which is
what makes a crash between planning and publishing harmless.
"""

from __future__ import annotations

import gc
import heapq
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence

from fleetwave.planner.budget import TokenBucket, budget_exceeded, failure_rate
from fleetwave.planner.conditions import (
    ConditionReason,
    ConditionType,
    DecisionReason,
    EventReason,
    Phase,
    merge_conditions,
)
from fleetwave.planner.model import (
    COUNT_KEYS,
    Action,
    CheckResults,
    ClearCommand,
    Condition,
    ControlOp,
    Decide,
    DeviceView,
    FleetPlan,
    HashCache,
    Plan,
    PlannedEvent,
    Republish,
    RolloutState,
    RolloutStatus,
    SendCancel,
    SendRollback,
    SendUpdate,
)
from fleetwave.planner.schedule import (
    DeviceWindows,
    Gate,
    ScheduleError,
    freeze_gate,
    not_before_gate,
    window_gate,
)
from fleetwave.planner.selectors import resolve_targets
from fleetwave.planner.waves import device_hash, step_of, thresholds
from fleetwave.protocol.messages import Command, CommandAction
from fleetwave.resources.model import SCHEDULED_TIME_ANNOTATION, Check, FailureAction, Rollout
from fleetwave.updates.commands import CANCEL_LIFETIME, command_for
from fleetwave.updates.model import (
    Decision,
    DecisionKind,
    Health,
    Reason,
    UpdateRecord,
    UpdateState,
    next_release,
)

LEGACY_OFFLINE_AFTER = 15 * 60.0
"""Seconds without any report after which a legacy device (no `online` topic) is offline."""

TIMEZONE_LABEL = "timezone"
"""Device label naming its IANA zone, for `window.timezone: device`."""

RECORD_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://fleetwave.io/updates")

FAILURE_REASONS = frozenset({Reason.ACK_TIMEOUT, Reason.UPDATE_TIMEOUT, Reason.UNHEALTHY,
                             Reason.OFFLINE_AFTER_UPDATE, Reason.CHECK_FAILED,
                             Reason.DEVICE_REPORTED_FAILURE, DecisionReason.VERSION_MISMATCH})

_UNSTARTED = frozenset({UpdateState.PENDING, UpdateState.ACKNOWLEDGED, UpdateState.SCHEDULED})
_ROLLBACK_DONE = frozenset({UpdateState.SUCCEEDED, UpdateState.ROLLED_BACK})


def record_ids(rollout: str, generation: int, device: str, attempt: int,
               action: str = "update") -> tuple[str, str]:
    """(record id, correlation id) of one attempt: the same every time it is planned.

    A controller that crashed after storing but before publishing plans the same
    attempt again and gets the same ids, so the device sees one command, not two.
    """
    key = f"{rollout}/{generation}/{device}/{attempt}/{action}"
    return (str(uuidlib.uuid5(RECORD_NAMESPACE, "record:" + key)),
            str(uuidlib.uuid5(RECORD_NAMESPACE, "command:" + key)))


def is_offline(device: DeviceView | None, now: float) -> bool:
    """Offline by its `online` flag, or for a legacy device by silence."""
    if device is None:
        return True
    if device.online is not None:
        return not device.online
    return device.last_seen is None or now - device.last_seen > LEGACY_OFFLINE_AFTER


def was_failure(record: UpdateRecord) -> bool:
    """Whether a finished attempt counts against the failure budget."""
    if record.state == UpdateState.FAILED:
        return True
    if record.state == UpdateState.TIMEOUT:
        return record.reason != Reason.UNREACHABLE
    if record.health == Health.UNHEALTHY:
        return True
    if record.state == UpdateState.ROLLED_BACK:
        return record.reason in FAILURE_REASONS or record.error is not None
    return False


def container_checks_pass(checks: Sequence[Check], device: DeviceView, version: str) -> bool:
    """Container checks read from reported state: running, with the expected image.

    `image` may contain `{version}`; "app:{version}" expects the tag of the rollout.
    """
    for check in checks:
        found = next((c for c in device.containers if c.name == check.container), None)
        if found is None or not found.running:
            return False
        if check.image is not None:
            want = check.image.replace("{version}", version)
            have = found.image or ""
            if have != want and not (":" not in want and have.endswith(":" + want)):
                return False
    return True


class _Pass:
    """Mutable scratch of one rollout's pass; never escapes `plan`."""

    __slots__ = (
        "actions",
        "candidates",
        "checks",
        "component",
        "counts",
        "done",
        "events",
        "ext",
        "external_checks",
        "failures",
        "force",
        "gen",
        "name",
        "newly_parked",
        "now",
        "open_count",
        "open_hashes",
        "parked",
        "policy",
        "released",
        "rollback_all",
        "rollback_devices",
        "rollout",
        "steps",
        "terminal_rate",
        "version",
        "wake",
    )

    def __init__(self, rollout: Rollout, state: RolloutState, now: float,
                 check_results: CheckResults | None) -> None:
        spec = rollout.spec
        self.rollout = rollout
        self.name = rollout.name
        self.now = now
        self.component = spec.component
        self.version = spec.version
        self.force = spec.force
        self.gen = state.generation
        self.policy = spec.failure_policy
        self.checks = tuple(c for c in spec.health.checks if c.type == "container")
        self.external_checks = any(c.type != "container" for c in spec.health.checks)
        self.ext = check_results or {}
        self.steps = len(spec.strategy.steps)
        self.parked = state.parked
        self.released = state.released
        self.rollback_devices = state.rollback_devices
        self.rollback_all = state.rolled_back is not None
        self.actions: list[Action] = []
        self.events: list[PlannedEvent] = []
        self.candidates: list[tuple[int, DeviceView, int]] = []
        """(wave hash, device, attempt) of devices that need a command (if their step runs)."""
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.open_hashes: list[int] = []
        """Wave hashes of targeted devices not terminal yet: they hold their step open."""
        self.failures = 0
        self.terminal_rate = 0
        self.done = 0
        self.open_count = 0
        self.newly_parked: set[str] = set()
        self.wake: float | None = None

    def wake_at(self, t: float) -> None:
        if t > self.now and (self.wake is None or t < self.wake):
            self.wake = t

    # -- commands -------------------------------------------------------------------------

    def command(self, record: UpdateRecord, action: CommandAction = "update") -> Command:
        return command_for(record, action, self.now,
                           self.rollout.spec.health.ack_timeout.total_seconds(),
                           artifact=self.rollout.spec.artifact)

    def new_update(self, device: DeviceView, attempt: int) -> SendUpdate:
        rid, cid = record_ids(self.name, self.gen, device.uuid, attempt)
        record = UpdateRecord(
            id=rid, device=device.uuid, rollout=self.name, component=self.component,
            to_version=self.version, state=UpdateState.PENDING, attempt=attempt,
            correlation_id=cid, created_at=self.now, updated_at=self.now,
            from_version=device.versions.get(self.component), generation=self.gen,
            force=self.force,
            scheduled_time=self.rollout.annotations.get(SCHEDULED_TIME_ANNOTATION),
            release=next_release(self.now),
        )
        return SendUpdate(record, self.command(record))

    def send_rollback(self, record: UpdateRecord) -> None:
        assert record.from_version is not None
        rid, cid = record_ids(self.name, self.gen, record.device, record.attempt, "rollback")
        rb = UpdateRecord(
            id=rid, device=record.device, rollout=self.name, component=record.component,
            to_version=record.from_version, from_version=record.to_version,
            state=UpdateState.PENDING, attempt=record.attempt, correlation_id=cid,
            created_at=self.now, updated_at=self.now, generation=self.gen, action="rollback",
            force=True, release=next_release(self.now),
        )
        self.actions.append(SendRollback(rb, self.command(rb, "rollback")))
        self.open_count += 1

    def cancel(self, record: UpdateRecord, reason: str) -> None:
        self.actions.append(SendCancel(record, self.command(record, "cancel")))
        self.actions.append(Decide(record.id, Decision(DecisionKind.CANCEL, self.now, reason)))

    def decide(self, record: UpdateRecord, kind: DecisionKind, reason: str | None = None,
               message: str | None = None) -> None:
        self.actions.append(Decide(record.id, Decision(kind, self.now, reason, message)))

    # -- one device with attempts -----------------------------------------------------------

    def open_record(self, record: UpdateRecord, device: DeviceView | None) -> bool:
        """Timeouts and re-publishing of an open attempt; True if it is still open after."""
        health = self.rollout.spec.health
        now = self.now
        if record.state == UpdateState.PENDING:
            deadline = record.created_at + health.ack_timeout.total_seconds()
            offline = is_offline(device, now)
            if now >= deadline:
                self.decide(record, DecisionKind.TIMEOUT,
                            Reason.UNREACHABLE if offline else Reason.ACK_TIMEOUT)
                self.actions.append(ClearCommand(record.device))
                return False
            self.wake_at(deadline)
            if not offline:
                every = health.ack_timeout.total_seconds() / 4
                # Never sent (a controller stopped between storing the record and
                # publishing it): send now, with the same correlation id.
                if record.sent_at is None or now >= record.sent_at + every:
                    action: CommandAction = ("rollback" if record.action == "rollback"
                                             else "update")
                    self.actions.append(Republish(record, self.command(record, action)))
                    self.wake_at(now + every)
                else:
                    self.wake_at(record.sent_at + every)
            return True
        if record.state == UpdateState.SCHEDULED and record.scheduled_time:
            return True  # the device chose a time; updateTimeout counts from its start
        base = record.started_at or record.scheduled_at or record.acknowledged_at \
            or record.created_at
        deadline = base + health.update_timeout.total_seconds()
        if now >= deadline:
            self.decide(record, DecisionKind.TIMEOUT, Reason.UPDATE_TIMEOUT)
            self.actions.append(ClearCommand(record.device))
            return False
        self.wake_at(deadline)
        return True

    def device_with_records(self, device: DeviceView, h: int,
                            recs: Sequence[UpdateRecord]) -> None:
        latest: UpdateRecord | None = None
        rollback: UpdateRecord | None = None
        max_attempt = 0
        for r in recs:
            if r.action == "rollback":
                if rollback is None or (r.created_at, r.attempt) > (rollback.created_at,
                                                                     rollback.attempt):
                    rollback = r
                continue
            if r.generation == self.gen and r.attempt > max_attempt:
                max_attempt = r.attempt
            if latest is None or (r.created_at, r.attempt) > (latest.created_at, latest.attempt):
                latest = r
        uuid = device.uuid
        counts = self.counts
        reported = device.versions.get(self.component)
        if rollback is not None and rollback.is_open and self.open_record(rollback, device):
            self.open_count += 1
        if latest is None:
            self.fresh(device, h, reported, 1)
            return
        if latest.is_open:
            if latest.to_version != self.version or latest.component != self.component:
                self.cancel(latest, Reason.SUPERSEDED)
                counts["cancelled"] += 1
                self.open_hashes.append(h)
                return
            if self.rollback_all:
                self.cancel(latest, DecisionReason.ROLLOUT_ROLLED_BACK)
                counts["cancelled"] += 1
                return
            if self.open_record(latest, device):
                self.open_count += 1
                counts[latest.state.value] += 1
                self.open_hashes.append(h)
            else:
                # Timed out just now: unreachable waits for the device, a failure is retried.
                key = "unreachable" if is_offline(device, self.now) else "timeout"
                counts[key] += 1
                if key == "timeout":
                    self.open_hashes.append(h)
                    self.failures += 1
                    self.terminal_rate += 1
            return
        # The latest attempt is finished.
        if rollback is not None and rollback.state in _ROLLBACK_DONE \
                and latest.state != UpdateState.ROLLED_BACK \
                and rollback.created_at >= latest.created_at:
            self.decide(latest, DecisionKind.ROLLED_BACK)
        current = latest.to_version == self.version and latest.component == self.component
        if not current:
            self.fresh(device, h, reported, max_attempt + 1)
            return
        has_rollback = rollback is not None and rollback.created_at >= latest.created_at
        state = latest.state
        # Touched: we saw it start or succeed, or the device reports the new version anyway
        # (a cancel that arrived after the device had begun, so it finished regardless).
        touched = (state == UpdateState.SUCCEEDED or latest.started_at is not None
                   or (reported is not None and reported == latest.to_version))
        if (self.rollback_all or uuid in self.rollback_devices) and touched \
                and not has_rollback and latest.from_version is not None \
                and reported != latest.from_version and state != UpdateState.ROLLED_BACK:
            self.send_rollback(latest)
            has_rollback = True
        now = self.now
        if state == UpdateState.SUCCEEDED:
            done_at = latest.completed_at or latest.updated_at
            offline_window = done_at + self.policy.offline_after_update.total_seconds()
            if latest.health == Health.UNKNOWN:
                verdict = self.judge(latest, device, reported, done_at, offline_window)
                if verdict is None:
                    counts["succeeded"] += 1
                    self.open_hashes.append(h)
                    return
                if verdict:
                    counts["succeeded"] += 1
                    self.terminal_rate += 1
                    self.done += 1
                    return
                self.unhealthy(latest, device, reported, has_rollback)
                return
            if latest.health == Health.HEALTHY:
                if now <= offline_window and is_offline(device, now):
                    self.decide(latest, DecisionKind.UNHEALTHY, Reason.OFFLINE_AFTER_UPDATE,
                                "device went silent after reporting success")
                    self.unhealthy(latest, device, reported, has_rollback)
                    return
                counts["succeeded"] += 1
                self.terminal_rate += 1
                if reported is not None and reported != self.version and not has_rollback:
                    # Drift: bring it back, not a failure of this version.
                    self.candidates.append((h, device, max_attempt + 1))
                else:
                    self.done += 1
                return
            self.unhealthy(latest, device, reported, has_rollback)
            return
        if state == UpdateState.TIMEOUT and latest.reason == Reason.UNREACHABLE:
            counts["unreachable"] += 1
            if reported == self.version and not self.force:
                self.done += 1
            elif not is_offline(device, now):
                self.candidates.append((h, device, max_attempt + 1))
            return
        if state in (UpdateState.FAILED, UpdateState.TIMEOUT):
            self.failures += 1
            self.terminal_rate += 1
            since = self.released.get(uuid)
            failed = sum(1 for r in recs if r.action == "update" and r.generation == self.gen
                         and (since is None or r.created_at >= since) and was_failure(r))
            if failed >= self.policy.retries + 1:
                counts["parked"] += 1
                if uuid not in self.parked:
                    self.newly_parked.add(uuid)
                self.rollback_failed(latest, reported, has_rollback, touched)
                return
            counts[state.value] += 1
            retry_at = (latest.completed_at or latest.updated_at) + \
                self.policy.retry_backoff.total_seconds() * 2 ** max(0, failed - 1)
            self.open_hashes.append(h)
            if now >= retry_at:
                self.candidates.append((h, device, max_attempt + 1))
            else:
                self.wake_at(retry_at)
            return
        if state == UpdateState.CANCELLED:
            counts["cancelled"] += 1
            if latest.reason == Reason.CANCELLED_BY_USER or self.rollback_all:
                return
            self.fresh(device, h, reported, max_attempt + 1, count=False)
            return
        # ROLLED_BACK: deliberately put back; not retried in this generation.
        counts["rolled_back"] += 1
        if was_failure(latest):
            self.failures += 1
            self.terminal_rate += 1

    def fresh(self, device: DeviceView, h: int, reported: str | None, attempt: int,
              count: bool = True) -> None:
        """A device with no attempt at this version: done if already there, else a candidate."""
        if reported == self.version and not self.force:
            if count:
                self.counts["upToDate"] += 1
            self.done += 1
            return
        self.open_hashes.append(h)
        self.candidates.append((h, device, attempt))

    def judge(self, record: UpdateRecord, device: DeviceView, reported: str | None,
              done_at: float, offline_window: float) -> bool | None:
        """Health of a success: True healthy, False unhealthy (decided here), None not yet."""
        now = self.now
        ext = self.ext.get((self.name, device.uuid)) if self.external_checks else True
        if ext is False:
            self.decide(record, DecisionKind.UNHEALTHY, Reason.CHECK_FAILED,
                        "a health check failed")
            return False
        if now <= offline_window and is_offline(device, now):
            self.decide(record, DecisionKind.UNHEALTHY, Reason.OFFLINE_AFTER_UPDATE,
                        "device went silent after reporting success")
            return False
        stable_at = done_at + self.rollout.spec.health.stable_for.total_seconds()
        if now < stable_at:
            self.wake_at(stable_at)
            return None
        if reported != self.version:
            if (device.state_at is not None and device.state_at < done_at
                    and now < offline_window):
                # The success status outran the device's new retained state (they are
                # separate messages): wait for the state, up to offlineAfterUpdate.
                self.wake_at(offline_window)
                return None
            self.decide(record, DecisionKind.UNHEALTHY, DecisionReason.VERSION_MISMATCH,
                        f"device reports {reported!r} after succeeding on {self.version!r}")
            return False
        if self.checks and not container_checks_pass(self.checks, device, self.version):
            self.decide(record, DecisionKind.UNHEALTHY, Reason.CHECK_FAILED,
                        "a container check failed")
            return False
        if ext is None:
            return None
        self.decide(record, DecisionKind.HEALTHY)
        return True

    def unhealthy(self, record: UpdateRecord, device: DeviceView, reported: str | None,
                  has_rollback: bool) -> None:
        del device
        self.counts["unhealthy"] += 1
        self.failures += 1
        self.terminal_rate += 1
        self.rollback_failed(record, reported, has_rollback, True)

    def rollback_failed(self, record: UpdateRecord, reported: str | None, has_rollback: bool,
                        touched: bool) -> None:
        if (self.policy.rollback_failed_devices and touched and not has_rollback
                and record.from_version is not None and reported is not None
                and reported != record.from_version and not self.rollback_all):
            self.send_rollback(record)

    def orphan(self, uuid: str, recs: Sequence[UpdateRecord], device: DeviceView | None) -> None:
        """Attempts of a device no longer targeted: they may finish or time out, nothing new."""
        for r in recs:
            if r.is_open:
                if r.action == "update" and r.to_version != self.version:
                    self.cancel(r, Reason.SUPERSEDED)
                elif self.open_record(r, device):
                    self.open_count += 1
        del uuid


def _gates(rollout: Rollout, now: float) -> Gate:
    """notBefore, then freezes, then a rollout-wide window (per-device windows come later)."""
    strategy = rollout.spec.strategy
    gate = not_before_gate(strategy.not_before, now)
    if not gate.open:
        return gate
    freeze = freeze_gate(strategy.freezes, now)
    if not freeze.open:
        return freeze
    window = strategy.window
    if window is not None and not window.per_device:
        win = window_gate(window, window.timezone, now)
        if not win.open:
            return win
        changes = [c for c in (freeze.next_change, win.next_change) if c is not None]
        return Gate(True, next_change=min(changes) if changes else None)
    return freeze


def plan(rollout: Rollout, devices: Sequence[DeviceView],
         records: Mapping[str, Sequence[UpdateRecord]], state: RolloutState | None, now: float,
         *, conflicted: int = 0, overridden: int = 0, conflicts_with: Sequence[str] = (),
         check_results: CheckResults | None = None, cache: HashCache | None = None,
         all_devices: Mapping[str, DeviceView] | None = None) -> Plan:
    """Plan one rollout over its targeted `devices` (already filtered by plan_fleet).

    `records` maps each device to its attempts for this rollout, old generations
    included; `state` is what the previous pass returned (None the first time).
    """
    spec = rollout.spec
    strategy = spec.strategy
    events: list[PlannedEvent] = []
    if state is None:
        state = RolloutState.initial(rollout, now)
    elif state.spec_hash != rollout.spec_hash:
        state, superseded = _supersede(rollout, state)
        events.extend(superseded)
    p = _Pass(rollout, state, now, check_results)
    p.events = events

    # One walk over the targeted devices: wave hash, then classification. Most devices
    # are either untouched or done and healthy; both take the short paths inline.
    table = (cache or HashCache()).for_rollout(rollout.name)
    name = rollout.name
    hashes: list[int] = []
    append_hash = hashes.append
    version, component, force = spec.version, spec.component, spec.force
    counts = p.counts
    candidates = p.candidates
    open_hashes = p.open_hashes
    succeeded, healthy = UpdateState.SUCCEEDED, Health.HEALTHY
    quick_ok = not p.rollback_all and not p.rollback_devices
    offline_after = spec.failure_policy.offline_after_update.total_seconds()
    up_to_date = fast_done = matched = 0
    for d in devices:
        uuid = d.uuid
        h = table.get(uuid)
        if h is None:
            h = table[uuid] = device_hash(name, uuid)
        append_hash(h)
        recs = records.get(uuid)
        if recs:
            matched += 1
            if len(recs) == 1 and quick_ok:
                r0 = recs[0]
                if (r0.state is succeeded and r0.health is healthy and r0.to_version == version
                        and d.versions.get(component) == version and r0.action == "update"
                        and r0.component == component
                        and (d.online is True or now > (r0.completed_at or r0.updated_at)
                             + offline_after)):
                    fast_done += 1
                    continue
            p.device_with_records(d, h, recs)
            continue
        if not force and d.versions.get(component) == version:
            up_to_date += 1
            continue
        open_hashes.append(h)
        candidates.append((h, d, 1))
    counts["upToDate"] += up_to_date
    counts["succeeded"] += fast_done
    p.terminal_rate += fast_done
    p.done += up_to_date + fast_done
    limits = thresholds([s.percent for s in strategy.steps], sorted(hashes))
    nonterm = [0] * (p.steps + 1)
    for h in open_hashes:
        nonterm[step_of(h, limits)] += 1
    if matched < len(records):
        targeted_ids = {d.uuid for d in devices}
        index = all_devices or {}
        for u, recs in records.items():
            if u not in targeted_ids:
                p.orphan(u, recs, index.get(u))
    counts["conflicted"] = conflicted
    counts["overridden"] = overridden

    # Gates: schedule errors make the rollout Failed (it cannot proceed).
    invalid: str | None = None
    device_windows: DeviceWindows | None = None
    try:
        gate = _gates(rollout, now)
        if strategy.window is not None and strategy.window.per_device:
            device_windows = DeviceWindows(strategy.window, now)
            device_windows.state(None)  # validates the fallback zone
    except ScheduleError as exc:
        invalid = str(exc)
        gate = Gate(False, ConditionReason.INVALID_SPEC, invalid)

    # Penalty box bookkeeping.
    parked = frozenset(state.parked | p.newly_parked)
    for u in sorted(p.newly_parked):
        events.append(PlannedEvent("Warning", EventReason.DEVICE_PARKED,
                                   f"device {u} failed {spec.failure_policy.retries + 1} times: "
                                   "parked until `promote --device` or a new generation", u))
    failures_over_floor = p.failures - state.budget_floor
    state = state.evolve(parked=parked, failures=p.failures)

    # Failure budget.
    stopped = state.aborted is not None or state.rolled_back is not None
    if (not stopped and state.paused_by != "failure" and state.phase != Phase.COMPLETED
            and failures_over_floor > 0
            and budget_exceeded(spec.failure_policy, p.failures, p.terminal_rate)):
        rate = failure_rate(p.failures, p.terminal_rate)
        action = spec.failure_policy.action
        msg = (f"failure rate {rate:.1f}% over {p.terminal_rate} devices exceeds "
               f"{spec.failure_policy.max_failure_percent:g}%: {action.value}")
        events.append(PlannedEvent("Warning", EventReason.FAILURE_BUDGET_EXCEEDED, msg))
        if action == FailureAction.PAUSE:
            state = state.evolve(paused_by="failure")
        elif action == FailureAction.ABORT:
            state = state.evolve(aborted="failure")
        else:
            state = state.evolve(rolled_back="failure")
            p.wake_at(now + 0.001)  # the next pass sends the rollbacks
        stopped = state.aborted is not None or state.rolled_back is not None

    paused = spec.paused or state.paused_by is not None
    targeted = len(devices)

    # Step machine.
    prefix_open = []
    acc = 0
    for n in nonterm[: p.steps]:
        acc += n
        prefix_open.append(acc)
    step_note: str | None = None
    can_move = not (stopped or paused or invalid) and targeted > 0
    if can_move and state.started_at is None and gate.open:
        state = state.evolve(started_at=now, step_started_at=now, current_step=0)
        events.append(PlannedEvent("Normal", EventReason.STEP_STARTED,
                                   f"step 1/{p.steps} started ({strategy.steps[0].percent}%)"))
    while can_move and state.started_at is not None and state.completed_at is None:
        i = state.current_step
        if prefix_open[i] > 0:
            break
        if state.step_finished_at is None:
            state = state.evolve(step_finished_at=now)
            events.append(PlannedEvent("Normal", EventReason.STEP_FINISHED,
                                       f"step {i + 1}/{p.steps} finished"))
        if i == p.steps - 1:
            state = state.evolve(completed_at=now)
            break
        step = strategy.steps[i]
        assert state.step_finished_at is not None
        pause_end = state.step_finished_at + (step.pause.total_seconds() if step.pause else 0)
        if now < pause_end and state.approved_step <= i:
            p.wake_at(pause_end)
            step_note = ConditionReason.STEP_PAUSE
            break
        if strategy.manual_approval and state.approved_step <= i:
            step_note = ConditionReason.AWAITING_APPROVAL
            break
        state = state.evolve(current_step=i + 1, step_started_at=now, step_finished_at=None)
        events.append(PlannedEvent(
            "Normal", EventReason.STEP_STARTED,
            f"step {i + 2}/{p.steps} started ({strategy.steps[i + 1].percent}%)"))

    # Phase, most decisive first.
    phase, reason, message = _phase(rollout, state, gate, invalid, targeted, step_note,
                                     device_windows)

    # New commands.
    sends_allowed = (not stopped and not paused and invalid is None and gate.open
                     and targeted > 0 and state.started_at is not None)
    if sends_allowed:
        _choose(p, state, device_windows, limits)
        if device_windows is not None:
            for c in device_windows.next_changes():
                p.wake_at(c)
            if not device_windows.any_open() and phase == Phase.PROGRESSING:
                phase, reason, message = (Phase.WAITING, ConditionReason.OUTSIDE_WINDOW,
                                          "outside every device's window")
    if not stopped and not paused and gate.next_change is not None:
        p.wake_at(gate.next_change)

    if strategy.max_per_minute is not None:
        state = _take_tokens(p, state)

    # Status and conditions.
    rate = failure_rate(p.failures, p.terminal_rate)
    if state.phase != phase:
        events.append(PlannedEvent(
            "Warning" if phase in (Phase.PAUSED, Phase.ABORTED, Phase.ROLLED_BACK, Phase.FAILED)
            and reason not in (ConditionReason.STEP_PAUSE, ConditionReason.AWAITING_APPROVAL)
            else "Normal",
            EventReason.PHASE_CHANGED, f"{state.phase} -> {phase}: {message}"))
    conditions = merge_conditions(state.conditions, _conditions(
        phase, reason, message, state.generation, now, conflicted, overridden, conflicts_with,
        invalid))
    state = state.evolve(phase=phase, conditions=conditions)
    status = RolloutStatus(
        phase=phase, current_step=state.current_step, observed_generation=rollout.generation,
        revision=rollout.source.revision, targeted=targeted, counts=counts, failure_rate=rate,
        done=p.done, message=message, conditions=conditions, steps=p.steps,
    )
    return Plan(tuple(p.actions), state, status, tuple(events), p.wake)


def _supersede(rollout: Rollout, state: RolloutState) -> tuple[RolloutState, list[PlannedEvent]]:
    """A new spec: open updates to an old version get cancelled (per device, in the pass);
    a new *version* restarts at the first step, so nothing unvalidated skips the canary."""
    spec = rollout.spec
    generation = max(rollout.generation, state.generation + 1)
    common = {
        "generation": generation, "spec_hash": rollout.spec_hash, "version": spec.version,
        "aborted": None, "rolled_back": None,
        "paused_by": state.paused_by if state.paused_by == "user" else None,
        "parked": frozenset(), "released": {}, "rollback_devices": frozenset(),
        "budget_floor": 0,
    }
    if state.version != spec.version:
        new = state.evolve(**common, current_step=0, step_started_at=None,
                           step_finished_at=None, approved_step=0, started_at=None,
                           completed_at=None)
        return new, [
            PlannedEvent("Normal", EventReason.SUPERSEDED,
                         f"version {state.version} superseded by {spec.version}: open updates "
                         f"to {state.version} are cancelled"),
            PlannedEvent("Normal", EventReason.RESTARTED,
                         f"new version {spec.version} restarts at step 1"),
        ]
    new = state.evolve(**common)
    return new, [PlannedEvent(
        "Normal", EventReason.SUPERSEDED,
        f"spec changed (generation {generation}), same version {spec.version}: "
        f"continues at step {state.current_step + 1}")]


def _phase(rollout: Rollout, state: RolloutState, gate: Gate, invalid: str | None,
           targeted: int, step_note: str | None,
           device_windows: DeviceWindows | None) -> tuple[str, str, str]:
    del device_windows
    steps = len(rollout.spec.strategy.steps)
    if invalid is not None:
        return Phase.FAILED, ConditionReason.INVALID_SPEC, invalid
    if state.rolled_back is not None:
        who = (ConditionReason.FAILURE_BUDGET_EXCEEDED if state.rolled_back == "failure"
               else ConditionReason.ROLLED_BACK_BY_USER)
        return Phase.ROLLED_BACK, who, (
            "rolled back; held until the spec changes" if who != ConditionReason.
            ROLLED_BACK_BY_USER else "rolled back by a user; held until the spec changes")
    if state.aborted is not None:
        who = (ConditionReason.FAILURE_BUDGET_EXCEEDED if state.aborted == "failure"
               else ConditionReason.ABORTED_BY_USER)
        return Phase.ABORTED, who, "aborted; devices keep what they run"
    if state.paused_by == "failure":
        return Phase.PAUSED, ConditionReason.FAILURE_BUDGET_EXCEEDED, \
            "paused: failure budget exceeded; `resume` to continue"
    if state.paused_by == "user":
        return Phase.PAUSED, ConditionReason.PAUSED_BY_USER, "paused by a user"
    if rollout.spec.paused:
        return Phase.PAUSED, ConditionReason.PAUSED_BY_SPEC, "paused by spec.paused"
    if targeted == 0:
        return Phase.PENDING, ConditionReason.NO_TARGETS, "no device matches the selector"
    if state.completed_at is not None:
        return Phase.COMPLETED, ConditionReason.ROLLOUT_COMPLETED, f"all {steps} steps finished"
    if not gate.open:
        return Phase.WAITING, gate.reason or ConditionReason.OUTSIDE_WINDOW, gate.message
    if step_note == ConditionReason.STEP_PAUSE:
        return Phase.PAUSED, step_note, f"step {state.current_step + 1}/{steps} pause"
    if step_note == ConditionReason.AWAITING_APPROVAL:
        return Phase.PAUSED, step_note, \
            f"step {state.current_step + 1}/{steps} finished; waiting for `promote`"
    return Phase.PROGRESSING, ConditionReason.STEP_IN_PROGRESS, \
        f"step {state.current_step + 1}/{steps} in progress"


def _conditions(phase: str, reason: str, message: str, generation: int, now: float,
                conflicted: int, overridden: int, conflicts_with: Sequence[str],
                invalid: str | None) -> list[Condition]:
    def cond(kind: str, on: bool, why: str, text: str) -> Condition:
        return Condition(kind, "True" if on else "False",
                         why if on else ConditionReason.AS_EXPECTED, text if on else "",
                         now, generation)

    progressing = phase == Phase.PROGRESSING
    out = [
        Condition(ConditionType.PROGRESSING, "True" if progressing else "False",
                  reason if progressing else (ConditionReason.ROLLOUT_COMPLETED
                                              if phase == Phase.COMPLETED else reason),
                  message, now, generation),
        cond(ConditionType.PAUSED, phase == Phase.PAUSED, reason, message),
        cond(ConditionType.WAITING, phase == Phase.WAITING, reason, message),
        cond(ConditionType.COMPLETED, phase == Phase.COMPLETED, reason, message),
        cond(ConditionType.ABORTED, phase == Phase.ABORTED, reason, message),
        cond(ConditionType.ROLLED_BACK, phase == Phase.ROLLED_BACK, reason, message),
        cond(ConditionType.CONFLICTED, conflicted > 0, ConditionReason.CONFLICTING_ROLLOUTS,
             f"{conflicted} device(s) also targeted by {', '.join(sorted(conflicts_with))}; "
             "neither rollout touches them" + (f"; {overridden} overridden by an API update"
                                               if overridden else "")),
        cond(ConditionType.FAILED, invalid is not None, ConditionReason.INVALID_SPEC,
             invalid or ""),
    ]
    return out


def _choose(p: _Pass, state: RolloutState, device_windows: DeviceWindows | None,
            limits: Sequence[int]) -> None:
    """Pick the devices to command now: members of started steps, lowest hash first."""
    strategy = p.rollout.spec.strategy
    current = state.current_step
    cut = limits[current]  # members of steps 0..current: hash <= cut
    eligible = [c for c in p.candidates if c[0] <= cut]
    if device_windows is not None:
        eligible = [c for c in eligible
                    if device_windows.state(c[1].labels.get(TIMEZONE_LABEL))[0]]
    if not eligible:
        return
    capacity = max(0, strategy.max_in_flight - p.open_count)
    if strategy.max_per_minute is not None:
        bucket = TokenBucket.restore(strategy.max_per_minute, state.tokens, state.tokens_at,
                                     p.now)
        if bucket.available < min(capacity, len(eligible)):
            p.wake_at(bucket.ready_at(min(capacity, len(eligible))))
        capacity = min(capacity, bucket.available)
    if capacity <= 0:
        return
    chosen = heapq.nsmallest(capacity, eligible, key=lambda c: c[0])
    for _, device, attempt in chosen:
        p.actions.append(p.new_update(device, attempt))
    p.open_count += len(chosen)


def _take_tokens(p: _Pass, state: RolloutState) -> RolloutState:
    rate = p.rollout.spec.strategy.max_per_minute
    assert rate is not None
    sent = sum(1 for a in p.actions if isinstance(a, SendUpdate))
    bucket = TokenBucket.restore(rate, state.tokens, state.tokens_at, p.now).take(sent)
    return state.evolve(tokens=bucket.tokens, tokens_at=bucket.at)


# -- the fleet ----------------------------------------------------------------------------


def plan_fleet(rollouts: Sequence[Rollout], devices: Sequence[DeviceView],
               records: Mapping[str, Mapping[str, Sequence[UpdateRecord]]],
               states: Mapping[str, RolloutState], now: float, *,
               check_results: CheckResults | None = None,
               cache: HashCache | None = None) -> FleetPlan:
    """Plan every rollout after resolving who may touch which device.

    Two rollouts targeting the same device and component conflict: both report
    it and neither touches the device. A rollout whose source is the API (an
    ad-hoc update) wins over the others for its device instead.
    """
    # A pass allocates one small tuple per candidate device; with a million live
    # devices the cyclic GC would rescan the whole fleet many times over for nothing
    # (nothing here makes cycles), so it is held off for the pass.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan_fleet(rollouts, devices, records, states, now,
                           check_results=check_results, cache=cache or HashCache())
    finally:
        if gc_was_enabled:
            gc.enable()


def _plan_fleet(rollouts: Sequence[Rollout], devices: Sequence[DeviceView],
                records: Mapping[str, Mapping[str, Sequence[UpdateRecord]]],
                states: Mapping[str, RolloutState], now: float, *,
                check_results: CheckResults | None, cache: HashCache) -> FleetPlan:
    targets = resolve_targets(rollouts, devices)
    index = _LazyIndex(devices)
    plans: dict[str, Plan] = {}
    wake: float | None = None
    for r in rollouts:
        t = targets[r.name]
        result = plan(r, t.targeted, records.get(r.name, {}), states.get(r.name), now,
                      conflicted=len(t.conflicted), overridden=len(t.overridden),
                      conflicts_with=sorted(t.conflicts_with),
                      check_results=check_results, cache=cache, all_devices=index)
        plans[r.name] = result
        if result.next_wake is not None and (wake is None or result.next_wake < wake):
            wake = result.next_wake
    return FleetPlan(plans, wake)


class _LazyIndex(Mapping[str, DeviceView]):
    """uuid -> device, built only if some rollout has records of untargeted devices."""

    def __init__(self, devices: Sequence[DeviceView]) -> None:
        self._devices = devices
        self._index: dict[str, DeviceView] | None = None

    def _built(self) -> dict[str, DeviceView]:
        if self._index is None:
            self._index = {d.uuid: d for d in self._devices}
        return self._index

    def __getitem__(self, key: str) -> DeviceView:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._devices)


def plan_deleted(name: str, records: Mapping[str, Sequence[UpdateRecord]],
                 now: float) -> Plan:
    """A Rollout removed from its home: stop. Devices keep what they run.

    Open updates that have not started are cancelled and their retained
    commands cleared; an update already running is left to finish.
    """
    actions: list[Action] = []
    cancelled = 0
    for device in sorted(records):
        for r in records[device]:
            if r.state in _UNSTARTED:
                actions.append(SendCancel(r, command_for(r, "cancel", now, CANCEL_LIFETIME)))
                actions.append(Decide(r.id, Decision(DecisionKind.CANCEL, now,
                                                     Reason.ROLLOUT_DELETED)))
                actions.append(ClearCommand(r.device))
                cancelled += 1
    message = f"rollout deleted: {cancelled} update(s) not yet started were cancelled"
    state = RolloutState(generation=0, spec_hash="", version="", phase="Deleted")
    status = RolloutStatus(phase="Deleted", current_step=0, observed_generation=0,
                           revision=None, targeted=0, counts=dict.fromkeys(COUNT_KEYS, 0),
                           failure_rate=0.0, done=0, message=message, conditions=())
    events = (PlannedEvent("Normal", "RolloutDeleted", message),)
    return Plan(tuple(actions), state, status, events, None)


# -- control operations -------------------------------------------------------------------


def apply_control(state: RolloutState, op: ControlOp, now: float,
                  device: str | None = None) -> tuple[RolloutState, tuple[PlannedEvent, ...]]:
    """A user's control operation, as a pure change of state; the next pass acts on it.

    `promote` approves the next step (skipping what is left of a pause); with a
    device it releases that device from the penalty box. `rollback` with a device
    puts only that device back on its previous version.
    """
    if op == "pause":
        return state.evolve(paused_by="user"), (
            PlannedEvent("Normal", EventReason.PAUSED, "paused by a user"),)
    if op == "resume":
        floor = state.failures if state.paused_by == "failure" else state.budget_floor
        return state.evolve(paused_by=None, budget_floor=floor), (
            PlannedEvent("Normal", EventReason.RESUMED,
                         "resumed" + (f"; failure budget counts failures beyond {floor}"
                                      if state.paused_by == "failure" else "")),)
    if op == "promote":
        if device is not None:
            released = dict(state.released)
            released[device] = now
            return state.evolve(parked=state.parked - {device}, released=released), (
                PlannedEvent("Normal", EventReason.DEVICE_RELEASED,
                             f"device {device} released from the penalty box", device),)
        target = state.current_step + 1
        return state.evolve(approved_step=max(state.approved_step, target)), (
            PlannedEvent("Normal", EventReason.PROMOTED, f"step {target + 1} approved"),)
    if op == "abort":
        return state.evolve(aborted="user"), (
            PlannedEvent("Warning", EventReason.ABORTED, "aborted by a user"),)
    if device is not None:
        return state.evolve(rollback_devices=state.rollback_devices | {device}), (
            PlannedEvent("Warning", EventReason.DEVICE_ROLLBACK_REQUESTED,
                         f"device {device}: rollback to its previous version requested",
                         device),)
    return state.evolve(rolled_back="user"), (
        PlannedEvent("Warning", EventReason.ROLLBACK_REQUESTED,
                     "rollback requested by a user: every updated device goes back"),)
