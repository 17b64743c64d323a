"""Typed, immutable resources, built from validated documents with defaults applied.

Everything downstream (planner, sources, API, operator) works on these, never
on raw dicts, so a field name is checked by mypy once instead of at each use.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from fleetwave.resources.durations import parse_duration
from fleetwave.resources.schema import SCHEMAS, Schema


class FailureAction(StrEnum):
    PAUSE = "pause"
    ROLLBACK = "rollback"
    ABORT = "abort"


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


SCHEDULED_TIME_ANNOTATION = "fleetwave.io/scheduled-time"
"""On a Rollout from the API: the RFC 3339 time its command asks the device to update at."""

DEVICE_TIMEZONE = "device"
"""`window.timezone` value meaning: each device's own `timezone` label."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Selector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()
    devices: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.match_labels or self.match_expressions or self.devices)


@dataclass(frozen=True, slots=True)
class Artifact:
    """What devices fetch: a file by `url` and its `sha256`, or an image by `digest`."""

    url: str | None = None
    sha256: str | None = None
    digest: str | None = None
    """`sha256:…` of a pushed container image: devices pull by digest, never by tag."""


@dataclass(frozen=True, slots=True)
class WebhookGate:
    """Asked before a step starts; `secret_ref` names the env variable of the HMAC key."""

    url: str
    secret_ref: str | None = None


@dataclass(frozen=True, slots=True)
class PrometheusAnalysis:
    """A step's metric check (`analysis.prometheus`): the instant query `query` against the
    Prometheus at `url` must stay within [`minimum`, `maximum`] for `for_` while the step
    soaks; an unset bound is open."""

    url: str
    query: str
    minimum: float | None = None
    maximum: float | None = None
    for_: timedelta = timedelta(0)
    """How long a result must stay inside (to pass) or outside (to fail) the bounds."""

    def within(self, value: float) -> bool:
        """Whether `value` is inside the bounds, both ends included.

        >>> a = PrometheusAnalysis("http://p:9090", "q", minimum=0.0, maximum=1.0)
        >>> a.within(1.0), a.within(1.5)
        (True, False)
        """
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))


@dataclass(frozen=True, slots=True)
class Step:
    percent: int
    pause: timedelta | None = None
    gate: WebhookGate | None = None
    analysis: PrometheusAnalysis | None = None


@dataclass(frozen=True, slots=True)
class Window:
    cron: str
    duration: timedelta
    timezone: str = "UTC"
    fallback_timezone: str = "UTC"

    @property
    def per_device(self) -> bool:
        return self.timezone == DEVICE_TIMEZONE


@dataclass(frozen=True, slots=True)
class Freeze:
    start: datetime
    end: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `max_in_flight` devices updating at once per value of the label `group_by`."""

    group_by: str
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class Ramp:
    """Exponential pacing: `start_per_minute` × `factor`^k after k periods of `every`."""

    start_per_minute: int
    max_per_minute: int
    factor: float = 2.0
    every: timedelta = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Hop:
    """A device below `below` is first taken to `via` (a mandatory intermediate version)."""

    below: str
    via: str


@dataclass(frozen=True, slots=True)
class Strategy:
    steps: tuple[Step, ...]
    max_in_flight: int = 500
    max_per_minute: int | None = None
    budgets: tuple[Budget, ...] = ()
    ramp: Ramp | None = None
    requires: tuple[Hop, ...] = ()
    window: Window | None = None
    freezes: tuple[Freeze, ...] = ()
    not_before: datetime | None = None
    manual_approval: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    type: str
    name: str | None = None
    url: str | None = None
    expect_status: int = 200
    body_contains: str | None = None
    host: str | None = None
    port: int | None = None
    container: str | None = None
    image: str | None = None
    timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Health:
    ack_timeout: timedelta = timedelta(minutes=10)
    update_timeout: timedelta = timedelta(minutes=15)
    stable_for: timedelta = timedelta(minutes=5)
    checks: tuple[Check, ...] = ()
    confirm_after_restart: bool = False
    """Success counts only once the device reports the new version after a restart."""


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    max_failure_percent: float = 20.0
    min_sample: int = 5
    action: FailureAction = FailureAction.PAUSE
    retries: int = 1
    retry_backoff: timedelta = timedelta(minutes=1)
    offline_after_update: timedelta = timedelta(minutes=10)
    rollback_failed_devices: bool = True


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    component: str
    version: str
    strategy: Strategy
    health: Health = field(default_factory=Health)
    failure_policy: FailurePolicy = field(default_factory=FailurePolicy)
    selector: Selector = field(default_factory=Selector)
    exclude: tuple[str, ...] = ()
    artifact: Artifact | None = None
    force: bool = False
    paused: bool = False


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a resource came from: `git`, `folder`, `kubernetes`, `api` or `policy`."""

    kind: str
    revision: str | None = None
    path: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    name: str
    spec: RolloutSpec
    raw_spec: Mapping[str, Any]
    """The spec as written, with defaults applied: what the API and CRD status show."""
    source: SourceRef = field(default_factory=lambda: SourceRef(kind="folder"))
    generation: int = 1
    namespace: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def spec_hash(self) -> str:
        """Stable digest of the spec: a change means a new generation outside Kubernetes."""
        return spec_digest(self.raw_spec)


@dataclass(frozen=True, slots=True)
class CommitTo:
    path: str = "rollouts/generated"
    branch: str | None = None


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    name: str
    image_pattern: str
    template: Mapping[str, Any]
    component: str | None = None
    version_policy: str = "semver"
    commit_to: CommitTo | None = None
    source: SourceRef = field(default_factory=lambda: SourceRef(kind="folder"))


@dataclass(frozen=True, slots=True)
class DeviceInventory:
    name: str
    labels: Mapping[str, Mapping[str, str]]
    """uuid -> labels that win over what the device reports."""
    source: SourceRef = field(default_factory=lambda: SourceRef(kind="folder"))


Resource = Rollout | RolloutPolicy | DeviceInventory


def spec_digest(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Return a copy of `value` with the schema's defaults filled in, recursively."""
    if schema.get("type") == "object" and isinstance(value, dict):
        out = dict(value)
        for name, prop in schema.get("properties", {}).items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(out[name], prop)
        return out
    if schema.get("type") == "array" and isinstance(value, list):
        return [apply_defaults(item, schema.get("items", {})) for item in value]
    return value


def parse_time(text: str) -> datetime:
    """RFC 3339 to an aware datetime (naive input is read as UTC)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _opt_duration(value: str | None) -> timedelta | None:
    return parse_duration(value) if value is not None else None


def _step_from(doc: Mapping[str, Any]) -> Step:
    gate = doc.get("gate")
    analysis = doc.get("analysis")
    prom = analysis["prometheus"] if analysis else None
    return Step(
        doc["percent"], _opt_duration(doc.get("pause")),
        WebhookGate(gate["webhook"]["url"], gate["webhook"].get("secretRef")) if gate else None,
        PrometheusAnalysis(
            prom["url"], prom["query"],
            float(prom["min"]) if prom.get("min") is not None else None,
            float(prom["max"]) if prom.get("max") is not None else None,
            parse_duration(prom.get("for", "0s"))) if prom else None,
    )


def _ramp_from(doc: Mapping[str, Any]) -> Ramp:
    return Ramp(start_per_minute=doc["startPerMinute"], max_per_minute=doc["maxPerMinute"],
                factor=float(doc.get("factor", 2)),
                every=parse_duration(doc.get("every", "1m")))


def selector_from(doc: Mapping[str, Any]) -> Selector:
    return Selector(
        match_labels=dict(doc.get("matchLabels", {})),
        match_expressions=tuple(
            Requirement(e["key"], Operator(e["operator"]), tuple(e.get("values", ())))
            for e in doc.get("matchExpressions", ())
        ),
        devices=tuple(doc.get("devices", ())),
    )


def rollout_spec_from(spec: Mapping[str, Any]) -> RolloutSpec:
    """Build a RolloutSpec from a *validated* spec dict (defaults are applied here too)."""
    spec = apply_defaults(dict(spec), SCHEMAS["Rollout"]["properties"]["spec"])
    strategy = spec.get("strategy", {})
    strategy = apply_defaults(strategy, SCHEMAS["Rollout"]["properties"]["spec"]["properties"]
                              ["strategy"])
    window = strategy.get("window")
    health = spec.get("health", {})
    health = apply_defaults(health, SCHEMAS["Rollout"]["properties"]["spec"]["properties"]
                            ["health"])
    fp = apply_defaults(spec.get("failurePolicy", {}),
                        SCHEMAS["Rollout"]["properties"]["spec"]["properties"]["failurePolicy"])
    artifact = spec.get("artifact")
    return RolloutSpec(
        component=spec["component"],
        version=str(spec["version"]),
        strategy=Strategy(
            steps=tuple(_step_from(s) for s in strategy["steps"]),
            max_in_flight=strategy["maxInFlight"],
            max_per_minute=strategy.get("maxPerMinute"),
            budgets=tuple(Budget(b["groupBy"], b["maxInFlight"])
                          for b in strategy.get("budgets", ())),
            ramp=_ramp_from(strategy["ramp"]) if "ramp" in strategy else None,
            requires=tuple(Hop(str(h["below"]), str(h["via"]))
                           for h in strategy.get("requires", ())),
            window=Window(
                cron=window["cron"],
                duration=parse_duration(window["duration"]),
                timezone=window.get("timezone", "UTC"),
                fallback_timezone=window.get("fallbackTimezone", "UTC"),
            ) if window else None,
            freezes=tuple(Freeze(parse_time(f["start"]), parse_time(f["end"]), f.get("reason"))
                          for f in strategy.get("freezes", ())),
            not_before=parse_time(strategy["notBefore"]) if "notBefore" in strategy else None,
            manual_approval=strategy["manualApproval"],
        ),
        health=Health(
            ack_timeout=parse_duration(health["ackTimeout"]),
            update_timeout=parse_duration(health["updateTimeout"]),
            stable_for=parse_duration(health["stableFor"]),
            checks=tuple(
                Check(
                    type=c["type"], name=c.get("name"), url=c.get("url"),
                    expect_status=c.get("expectStatus", 200),
                    body_contains=c.get("bodyContains"), host=c.get("host"),
                    port=c.get("port"), container=c.get("container"), image=c.get("image"),
                    timeout=parse_duration(c.get("timeout", "5s")),
                )
                for c in health.get("checks", ())
            ),
            confirm_after_restart=bool(health.get("confirmAfterRestart", False)),
        ),
        failure_policy=FailurePolicy(
            max_failure_percent=float(fp["maxFailurePercent"]),
            min_sample=fp["minSample"],
            action=FailureAction(fp["action"]),
            retries=fp["retries"],
            retry_backoff=parse_duration(fp["retryBackoff"]),
            offline_after_update=parse_duration(fp["offlineAfterUpdate"]),
            rollback_failed_devices=fp["rollbackFailedDevices"],
        ),
        selector=selector_from(spec.get("selector", {})),
        exclude=tuple(spec.get("exclude", {}).get("devices", ())),
        artifact=Artifact(artifact.get("url"), artifact.get("sha256"),
                          artifact.get("digest")) if artifact else None,
        force=spec["force"],
        paused=spec["paused"],
    )


def resource_from(doc: Mapping[str, Any], source: SourceRef | None = None) -> Resource:
    """Build the typed resource of a *validated* document."""
    kind = doc["kind"]
    meta = doc["metadata"]
    name = meta["name"]
    src = source or SourceRef(kind="folder")
    if kind == "Rollout":
        raw = apply_defaults(dict(doc["spec"]), SCHEMAS["Rollout"]["properties"]["spec"])
        return Rollout(
            name=name, spec=rollout_spec_from(raw), raw_spec=raw, source=src,
            generation=int(meta.get("generation", 1)), namespace=meta.get("namespace"),
            annotations=dict(meta.get("annotations", {})),
        )
    if kind == "RolloutPolicy":
        spec = doc["spec"]
        commit = spec.get("commitTo")
        return RolloutPolicy(
            name=name, image_pattern=spec["imagePattern"], template=dict(spec.get("template", {})),
            component=spec.get("component"), version_policy=spec.get("versionPolicy", "semver"),
            commit_to=CommitTo(commit.get("path", "rollouts/generated"), commit.get("branch"))
            if commit is not None else None,
            source=src,
        )
    if kind == "DeviceInventory":
        return DeviceInventory(
            name=name,
            labels={d["uuid"]: dict(d.get("labels", {})) for d in doc["spec"].get("devices", ())},
            source=src,
        )
    raise ValueError(f"unknown kind {kind!r}")
