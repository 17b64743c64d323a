"""What the dashboard's pages show, computed from the API's `ControlPlane` and nothing else.

The dashboard reads what `fleetwave status`, `devices` and `plan` read: the control
plane's JSON. Wave membership and the "what happens next" times come from the
planner's own functions (`resolve_targets`, `wave_members`, `preview`), so the
dashboard never disagrees with the controller about who is in which wave.

Every answer is one bounded page: a list over the fleet is cut to `limit` rows
here, so no response grows with the fleet. The fleet-wide inputs (every device,
every rollout, their targets) are read at most once per `ttl` seconds and shared
by every request in between.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from fleetwave.api.ports import JSON, ControlPlane, Key, NotFound, Page
from fleetwave.background import Background
from fleetwave.planner.model import DeviceView
from fleetwave.planner.preview import preview, wave_members
from fleetwave.planner.selectors import Targets, resolve_targets
from fleetwave.resources.model import Rollout, SourceRef, resource_from
from fleetwave.updates.model import OPEN_STATES, Health, Reason, UpdateState

log = structlog.get_logger("fleetwave.dashboard")

GROUPS = ("done", "inFlight", "failed", "unreachable", "parked", "waiting")
"""How a wave's progress bar splits its devices, in drawing order."""

OPEN = frozenset(s.value for s in OPEN_STATES)
FAILED = frozenset({UpdateState.FAILED.value, UpdateState.TIMEOUT.value,
                    UpdateState.ROLLED_BACK.value})

STEP_REASONS = frozenset({"StepStarted", "StepFinished", "Paused", "Resumed", "Promoted",
                          "Aborted", "RollbackRequested", "FailureBudgetExceeded",
                          "Superseded", "Restarted", "Completed"})
"""Events drawn as markers on the progress chart."""

READ_CHUNK = 2000
"""Devices turned into planner views between two yields to the loop."""

PREPARED_ROLLOUTS = 50
"""Rollouts whose devices and waves a fleet read prepares (the first page of the list);
others are prepared when a page asks for them."""

CHART_EVENTS = 1000
"""The newest events read for chart markers: one bounded query."""


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rollout_of(item: Mapping[str, Any]) -> Rollout:
    """The typed Rollout of a control-plane rollout (its spec is validated already)."""
    source = item.get("source") or {}
    resource = resource_from(
        {"kind": "Rollout", "spec": item["spec"],
         "metadata": {"name": item["name"], "generation": item.get("generation", 1)}},
        SourceRef(kind=str(source.get("kind") or "folder"), revision=source.get("revision"),
                  path=source.get("path")))
    assert isinstance(resource, Rollout)
    return resource


def device_view(item: Mapping[str, Any]) -> DeviceView:
    """What targeting and waves need of a listed device; its dicts are the list's own
    (fresh per listing), so nothing is copied: at 10,000 devices this is the hot loop."""
    return DeviceView(uuid=item["uuid"], versions=item.get("versions") or {},
                      labels=item.get("labels") or {}, online=item.get("online"))


def group_of(row: Mapping[str, Any] | None, reported: str | None, version: str) -> str:
    """Which part of a wave's bar a device is in, from its latest record in the rollout."""
    if row is None or row.get("toVersion") != version:
        return "done" if reported == version else "waiting"
    state = row.get("state")
    if row.get("parked"):
        return "parked"
    if state in OPEN:
        return "inFlight"
    if state == UpdateState.TIMEOUT.value and row.get("reason") == Reason.UNREACHABLE:
        return "done" if reported == version else "unreachable"
    if state in FAILED or row.get("health") == Health.UNHEALTHY.value:
        return "failed"
    if state == UpdateState.SUCCEEDED.value:
        return "done"
    return "done" if reported == version else "waiting"


@dataclass
class Fleet:
    """One read of the whole fleet and every rollout, shared for `ttl` seconds."""

    at: float
    devices: dict[str, DeviceView]
    device_json: list[JSON]
    """Sorted by uuid, as the control plane lists them."""
    rollouts: dict[str, Rollout]
    rollout_json: dict[str, JSON]
    targets: dict[str, Targets]
    _waves: dict[str, dict[str, int]] = field(default_factory=dict)
    _rows: dict[str, dict[str, JSON]] = field(default_factory=dict)

    async def rows_of(self, control: ControlPlane, name: str) -> dict[str, JSON]:
        """uuid -> the rollout's latest record per device, read once per fleet read."""
        rows = self._rows.get(name)
        if rows is None:
            rows = {r["uuid"]: r for r in await every_page(
                lambda after: control.rollout_devices(name, after, READ_CHUNK))}
            self._rows[name] = rows
        return rows

    def wave_of(self, name: str) -> dict[str, int]:
        """uuid -> 0-based step of every device the rollout targets."""
        waves = self._waves.get(name)
        if waves is None:
            members = wave_members(self.rollouts[name], self.targets[name].targeted)
            waves = {d.uuid: i for i, wave in enumerate(members) for d in wave}
            self._waves[name] = waves
        return waves


class FleetReads:
    """One read of the whole fleet shared by every request for `ttl` seconds."""

    def __init__(self, control: ControlPlane, *, ttl: float = 2.0) -> None:
        self.control = control
        self.ttl = ttl
        """Seconds a fleet read is reused: two seconds of staleness (the page says live
        within that) for a bounded cost however many browsers are open."""
        self.max_stale = 30.0
        """Seconds after which a fleet read is not shown even once while a new one runs."""
        self._fleet: Fleet | None = None
        self._refreshing = False
        self.background = Background(log, "dashboard.background_failed")
        """Work beside the requests; a failure is logged, the old answer stays."""
        self._reading: asyncio.Lock = asyncio.Lock()

    async def fleet(self) -> Fleet:
        """The shared fleet read: fresh within `ttl`; older, it is still answered at once
        while a new read runs beside (so no request waits for one); past `max_stale`
        (nobody looked for a while) it is read again first."""
        fleet = self._fleet
        if fleet is not None:
            age = time.monotonic() - fleet.at
            if age < self.ttl:
                return fleet
            if age < self.max_stale:
                self._refresh_beside()
                return fleet
        async with self._reading:
            fleet = self._fleet
            if fleet is None or time.monotonic() - fleet.at >= self.ttl:
                fleet = self._fleet = await self._read()
            return fleet

    async def fleet_with(self, name: str) -> Fleet:
        """The fleet read, fresh when `name` is newer than it; NotFound for no such rollout."""
        fleet = await self.fleet()
        if name in fleet.rollouts:
            return fleet
        if self.control.get_rollout(name) is None:
            raise NotFound(f"no rollout named {name}")
        async with self._reading:
            fleet = self._fleet = await self._read()
        if name not in fleet.rollouts:
            raise NotFound(f"no rollout named {name}")
        return fleet

    def _refresh_beside(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True

        async def refresh() -> None:
            try:
                async with self._reading:
                    self._fleet = await self._read()
            finally:
                self._refreshing = False

        self.background.run(refresh(), "dashboard-fleet-read")

    async def _read(self) -> Fleet:
        """Read the fleet, yielding to the loop between the parts so a request that
        arrives meanwhile waits for one part at most, not the whole read."""
        started = time.monotonic()
        items = await every_page(lambda after: self.control.list_devices(after, READ_CHUNK))
        listed = self.control.list_rollouts()
        rollouts = {item["name"]: rollout_of(item) for item in listed}
        devices: dict[str, DeviceView] = {}
        for start in range(0, len(items), READ_CHUNK):
            for d in items[start:start + READ_CHUNK]:
                devices[d["uuid"]] = device_view(d)
            await asyncio.sleep(0)
        targets = resolve_targets(list(rollouts.values()), list(devices.values()))
        fleet = Fleet(at=started, devices=devices, device_json=items, rollouts=rollouts,
                      rollout_json={i["name"]: i for i in listed}, targets=targets)
        for name in sorted(rollouts)[:PREPARED_ROLLOUTS]:
            await asyncio.sleep(0)
            try:
                await fleet.rows_of(self.control, name)
            except NotFound:
                continue  # deleted since the listing: its page says so when asked
            await asyncio.sleep(0)
            fleet.wave_of(name)
        return fleet


async def every_page(read: Callable[[Key | None], Awaitable[Page]]) -> list[JSON]:
    """Every item of a paged ControlPlane list, yielding to the loop between pages so a
    request that arrives meanwhile waits for one page at most."""
    items: list[JSON] = []
    after: Key | None = None
    while True:
        page = await read(after)
        items.extend(page.items)
        await asyncio.sleep(0)
        if page.next is None:
            return items
        after = page.next


class Views:
    """The dashboard's data, one bounded page at a time."""

    def __init__(self, control: ControlPlane, *, ttl: float = 2.0, plan_ttl: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.reads = FleetReads(control, ttl=ttl)
        self.plan_ttl = plan_ttl
        """Seconds a plan preview is reused: it is an estimate of times to the second,
        and computing it walks every targeted device."""
        self._plans: dict[str, tuple[float, JSON]] = {}
        self._planning: set[str] = set()
        self.clock = clock
        self._started_at: dict[str, float] = {}

    async def fleet(self) -> Fleet:
        return await self.reads.fleet()

    async def _fleet_with(self, name: str) -> Fleet:
        return await self.reads.fleet_with(name)

    # -- rollouts ---------------------------------------------------------------------

    async def rollouts(self, offset: int, limit: int, phase: str | None) -> JSON:
        fleet = await self.fleet()
        names = sorted(fleet.rollouts)
        if phase:
            names = [n for n in names
                     if fleet.rollout_json[n]["status"].get("phase", "Pending") == phase]
        page = names[offset:offset + limit]
        items = [await self._summary(fleet, name) for name in page]
        return {"items": items, "total": len(names), "offset": offset, "limit": limit}

    async def rollout(self, name: str) -> JSON:
        fleet = await self._fleet_with(name)
        summary = await self._summary(fleet, name)
        item = fleet.rollout_json[name]
        spec = item["spec"]
        targets = fleet.targets[name]
        summary.update({
            "conditions": item["status"].get("conditions", []),
            "strategy": spec.get("strategy", {}), "health": spec.get("health", {}),
            "failurePolicy": spec.get("failurePolicy", {}), "selector": spec.get("selector"),
            "conflicted": len(targets.conflicted), "conflictsWith": sorted(targets.conflicts_with),
            "overridden": len(targets.overridden),
        })
        return summary

    async def _summary(self, fleet: Fleet, name: str) -> JSON:
        item = fleet.rollout_json[name]
        rollout = fleet.rollouts[name]
        status = item["status"]
        waves = await self._wave_counts(fleet, name)
        steps = rollout.spec.strategy.steps
        return {
            "name": name, "component": rollout.spec.component, "version": rollout.spec.version,
            "phase": status.get("phase", "Pending"), "currentStep": status.get("currentStep", 0),
            "message": status.get("message", ""), "targeted": status.get("targeted", 0),
            "progress": status.get("progress", "0/0"), "counts": status.get("counts", {}),
            "failureRate": status.get("failureRate", 0.0),
            "maxFailurePercent": rollout.spec.failure_policy.max_failure_percent,
            "source": item.get("source", {}), "generation": item.get("generation"),
            "startedAt": await self._started(name),
            "waves": [{"step": i + 1, "percent": s.percent,
                       "pause": s.pause.total_seconds() if s.pause else None,
                       "members": sum(waves[i].values()), "counts": dict(waves[i])}
                      for i, s in enumerate(steps)],
        }

    async def _wave_counts(self, fleet: Fleet, name: str) -> list[Counter[str]]:
        rollout = fleet.rollouts[name]
        rows = await fleet.rows_of(self.control, name)
        counts = [Counter[str]() for _ in range(len(rollout.spec.strategy.steps) + 1)]
        component, version = rollout.spec.component, rollout.spec.version
        for uuid, step in fleet.wave_of(name).items():
            device = fleet.devices.get(uuid)
            reported = device.versions.get(component) if device is not None else None
            counts[step][group_of(rows.get(uuid), reported, version)] += 1
        return counts

    async def _started(self, name: str) -> float | None:
        """When the rollout's audit trail begins: its age."""
        known = self._started_at.get(name)
        if known is not None:
            return known
        items, _ = await self.control.rollout_events(name, 0, 1)
        started = parse_time(items[0].get("time")) if items else None
        if started is not None:
            if len(self._started_at) >= 10_000:
                self._started_at.clear()  # ad-hoc rollouts come and go: stay bounded
            self._started_at[name] = started
        return started

    async def rollout_devices(self, name: str, offset: int, limit: int, *,
                              state: str | None, wave: int | None,
                              label: tuple[str, str | None] | None) -> JSON:
        """The rollout's devices with wave and state, filtered, one page."""
        fleet = await self._fleet_with(name)
        rollout = fleet.rollouts[name]
        component, version = rollout.spec.component, rollout.spec.version
        rows = await fleet.rows_of(self.control, name)
        waves = fleet.wave_of(name)
        matched: list[JSON] = []
        total = 0
        for uuid in sorted(waves):
            step = waves[uuid]
            if wave is not None and step != wave - 1:
                continue
            device = fleet.devices.get(uuid)
            if label is not None and not _has_label(device, label):
                continue
            row = rows.get(uuid)
            reported = device.versions.get(component) if device is not None else None
            group = group_of(row, reported, version)
            shown = row.get("state") if row is not None and row.get("toVersion") == version \
                else ("upToDate" if group == "done" else "waiting")
            if state is not None and state not in (group, shown):
                continue
            total += 1
            if offset < total <= offset + limit:
                matched.append({
                    "uuid": uuid, "wave": step + 1 if step < len(rollout.spec.strategy.steps)
                    else None, "group": group, "state": shown,
                    "attempt": row.get("attempt") if row else None,
                    "reported": reported, "online": device.online if device else None,
                    "reason": row.get("reason") if row else None,
                    "labels": dict(device.labels) if device else {},
                    "updateId": row.get("updateId") if row else None,
                })
        return {"items": matched, "total": total, "offset": offset, "limit": limit}

    async def events(self, name: str, offset: int, limit: int) -> JSON:
        """The timeline, newest first: `offset` counts back from the newest event."""
        _, total = await self.control.rollout_events(name, 0, 1)
        start = max(0, total - offset - limit)
        end = max(0, total - offset)
        items: list[JSON] = []
        if end > start:
            items, total = await self.control.rollout_events(name, start, end - start)
        return {"items": list(reversed(items)), "total": total, "offset": offset,
                "limit": limit}

    async def chart(self, name: str, samples: Sequence[Mapping[str, Any]]) -> JSON:
        """Progress and failure rate over time, with the step and control events as marks."""
        _, total = await self.control.rollout_events(name, 0, 1)
        start = max(0, total - CHART_EVENTS)
        items, _ = await self.control.rollout_events(name, start, CHART_EVENTS)
        marks = [{"time": parse_time(e.get("time")), "reason": e.get("reason"),
                  "message": e.get("message")}
                 for e in items if e.get("reason") in STEP_REASONS and not e.get("device")]
        return {"samples": list(samples), "marks": marks}

    async def plan(self, name: str) -> JSON:
        """`fleetwave plan` of this rollout against the live fleet: each wave's earliest
        start; device lists are left out (counts only), so the answer stays small.
        Kept `plan_ttl` seconds, then recomputed beside the requests like the fleet."""
        cached = self._plans.get(name)
        if cached is not None:
            age = time.monotonic() - cached[0]
            if age < self.plan_ttl:
                return cached[1]
            if age < self.reads.max_stale:
                if name not in self._planning:
                    self._planning.add(name)
                    self.reads.background.run(self._replan(name), f"dashboard-plan-{name}")
                return cached[1]
        return await self._replan(name)

    async def _replan(self, name: str) -> JSON:
        try:
            fleet = await self._fleet_with(name)
            others = [r for n, r in fleet.rollouts.items() if n != name]
            result = preview([fleet.rollouts[name]], list(fleet.devices.values()),
                             self.clock(), others=others, group_by=()).to_dict()
        finally:
            self._planning.discard(name)
        (previewed,) = result["rollouts"]
        for wave in previewed["waves"]:
            wave.pop("devices", None)
            wave.pop("byLabel", None)
        for key in ("excluded", "conflicted", "overridden"):
            previewed[key].pop("devices", None)
        answer = {"now": result["now"], "assumptions": result["assumptions"], **previewed}
        if len(self._plans) >= 1000:
            self._plans.clear()
        self._plans[name] = (time.monotonic(), answer)
        return answer

    # -- devices -------------------------------------------------------------------------

    async def devices(self, offset: int, limit: int, *, query: str | None,
                      label: tuple[str, str | None] | None, online: bool | None) -> JSON:
        fleet = await self.fleet()
        matched: list[JSON] = []
        total = 0
        needle = query.lower() if query else None
        for item in fleet.device_json:
            if needle is not None and needle not in item["uuid"].lower() and \
                    needle not in str(item.get("name") or "").lower():
                continue
            if online is not None and bool(item.get("online")) != online:
                continue
            if label is not None and not _has_label(fleet.devices.get(item["uuid"]), label):
                continue
            total += 1
            if offset < total <= offset + limit:
                matched.append({k: item.get(k) for k in ("uuid", "name", "versions", "labels",
                                                         "online", "lastSeen")})
        return {"items": matched, "total": total, "offset": offset, "limit": limit}

    async def fleet_summary(self) -> JSON:
        """Versions per component and devices online: the fleet page's charts."""
        fleet = await self.fleet()
        versions: dict[str, Counter[str]] = {}
        online = Counter[str]()
        for device in fleet.devices.values():
            online["online" if device.online else
                   "unknown" if device.online is None else "offline"] += 1
            for component, version in device.versions.items():
                versions.setdefault(component, Counter())[version] += 1
        return {"devices": len(fleet.devices), "online": dict(online),
                "components": {c: _top(v) for c, v in sorted(versions.items())}}


def _top(counts: Counter[str], limit: int = 12) -> list[JSON]:
    """The most common versions, the rest summed as `other`: a chart stays readable."""
    common = counts.most_common()
    out: list[JSON] = [{"version": v, "devices": n} for v, n in common[:limit]]
    rest = sum(n for _, n in common[limit:])
    if rest:
        out.append({"version": "other", "devices": rest, "other": len(common) - limit})
    return out


def _has_label(device: DeviceView | None, label: tuple[str, str | None]) -> bool:
    if device is None:
        return False
    key, value = label
    have = device.labels.get(key)
    return have is not None and (value is None or have == value)


def parse_label(text: str | None) -> tuple[str, str | None] | None:
    """`region=eu` -> ("region", "eu"); `region` -> ("region", None): has the label."""
    if not text:
        return None
    key, sep, value = text.partition("=")
    return (key.strip(), value.strip() if sep else None)
