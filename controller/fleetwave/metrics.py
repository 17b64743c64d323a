"""Every Prometheus metric fleetwave exports, in one place.

Labels are bounded: component, version, rollout, phase, state, reason, kind.
Never a device id, ip or topic, so the number of series does not grow with the
fleet. Each process builds one `Metrics` on its own `CollectorRegistry`; tests
build their own and read values back with `get_sample_value()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from fleetwave import __version__
from fleetwave.planner.model import AnalysisOutcome
from fleetwave.protocol.admission import RefusalReason

PREFIX = "fleetwave"

UPDATE_DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

DROP_REASONS = ("too_large", "invalid_json", "invalid_schema", "uuid_mismatch", "unknown_topic",
                "unknown_update", "new_device_rate")
"""Why an inbound message was dropped: the only values of the `reason` label."""

HEALTH_CHECK_REFUSALS = ("not_an_address", "loopback", "link_local", "unspecified",
                         "multicast", "broadcast", "denied", "redirect", "body_too_large")
"""Why a health check was refused (runtime/checks.py): the only values of its `reason`."""

OTHER = "other"
"""The label value for every device-reported component or version no Rollout declares."""


def declared_version_counts(reported: Iterable[tuple[Mapping[str, str], int]],
                            declared: Mapping[str, Set[str]]) -> dict[tuple[str, str], int]:
    """Devices per (component, version), with undeclared values folded into `other`.

    `reported` holds each reported versions mapping with the number of devices that
    report it (a fleet holds few distinct ones: `FleetState` shares equal mappings).

    Devices choose what they report, so a reported value only becomes a label value
    when some Rollout declares it (`declared`: component -> versions); anything else
    counts as `other`, which bounds the series by what operators committed, not by
    what a hostile or buggy fleet sends. A component no Rollout names is `other` too.

    >>> declared_version_counts([({"agent": "1.0.6"}, 3), ({"agent": "x"}, 1),
    ...                          ({"junk": "1"}, 1)], {"agent": {"1.0.6"}})
    {('agent', '1.0.6'): 3, ('agent', 'other'): 1, ('other', 'other'): 1}
    """
    counts: dict[tuple[str, str], int] = {}
    for versions, devices in reported:
        for component, version in versions.items():
            known = declared.get(component)
            if known is None:
                key = (OTHER, OTHER)
            else:
                key = (component, version if version in known else OTHER)
            counts[key] = counts.get(key, 0) + devices
    return counts


REFUSAL_REASONS: tuple[str, ...] = get_args(RefusalReason)
"""The `reason`s of an `update_failed` a device sends for a command it refused (DESIGN.md
9.1); the only label values of fleetwave_commands_refused_total."""

@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    build: Info
    # fleet
    devices: Gauge
    devices_online: Gauge
    # rollouts
    rollout_phase: Gauge
    rollout_step: Gauge
    rollout_targeted: Gauge
    rollout_progress: Gauge
    rollout_failure_ratio: Gauge
    rollout_devices: Gauge
    updates: Counter
    update_duration: Histogram
    stale_updates: Gauge
    # engine
    reconcile_duration: Histogram
    reconcile_errors: Counter
    # mqtt
    mqtt_received: Counter
    mqtt_published: Counter
    mqtt_dropped: Counter
    mqtt_connected: Gauge
    commands_refused: Counter
    # sources
    source_revision: Gauge
    source_last_sync: Gauge
    source_sync_errors: Counter
    source_invalid_files: Gauge
    # notifications
    notifications: Counter
    # health checks
    health_checks_refused: Counter
    # hostile input refused at the edges
    api_refused: Counter
    # dashboard
    dashboard_streams: Gauge
    dashboard_streams_refused: Counter
    # leadership (DESIGN.md 9.3)
    leader: Gauge
    leader_epoch: Gauge
    fenced_writes: Counter
    # step analyses (DESIGN.md 9.5)
    analysis_queries: Counter


def _dashboard_metrics(reg: CollectorRegistry) -> dict[str, Any]:
    p = PREFIX
    return {
        "dashboard_streams": Gauge(f"{p}_dashboard_streams",
                                   "Dashboard live streams (server-sent events) open.",
                                   registry=reg),
        "dashboard_streams_refused": Counter(f"{p}_dashboard_streams_refused",
                                             "Dashboard streams refused: too many open.",
                                             registry=reg),
    }


def _leadership_metrics(reg: CollectorRegistry) -> dict[str, Any]:
    """Which replica leads (DESIGN.md 9.3)."""
    p = PREFIX
    return {
        "leader": Gauge(f"{p}_leader", "1 while this replica leads (plans and publishes).",
                        registry=reg),
        "leader_epoch": Gauge(f"{p}_leader_epoch", "The epoch of the lease this replica "
                              "last held; it increases with every change of leader.",
                              registry=reg),
        "fenced_writes": Counter(f"{p}_fenced_writes", "Writes the store refused because "
                                 "this replica no longer held the lease.", registry=reg),
    }


ANALYSIS_RESULTS: tuple[str, ...] = get_args(AnalysisOutcome)
"""The `result`s of fleetwave_analysis_queries_total: what each query answered."""


def _analysis_metrics(reg: CollectorRegistry) -> dict[str, Any]:
    """Step analyses' queries by result (no rollout label: the events name the rollout)."""
    counter = Counter(f"{PREFIX}_analysis_queries", "Analysis queries sent to Prometheus, "
                      "by result (in_bounds, out_of_bounds, unavailable).", ["result"],
                      registry=reg)
    for result in ANALYSIS_RESULTS:
        counter.labels(result=result)
    return {"analysis_queries": counter}


def _edge_metrics(p: str, reg: CollectorRegistry) -> dict[str, Any]:
    """What the edges refuse: commands (devices report), health checks, API requests."""
    return dict(
        commands_refused=Counter(f"{p}_commands_refused",
                                 "Commands devices reported refusing (bad signature, another "
                                 "device's, expired, replayed, unmarked downgrade).",
                                 ["reason"], registry=reg),
        health_checks_refused=Counter(
            f"{p}_health_checks_refused", "Health checks refused: an address the controller "
            "does not connect to, a redirect, an oversized body.", ["reason"], registry=reg),
        api_refused=Counter(f"{p}_api_requests_refused",
                            "API requests and webhook deliveries refused, by reason "
                            "(unauthorized, forbidden, replayed_delivery, stale_timestamp…).",
                            ["reason"], registry=reg),
    )


def build_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """All metrics on `registry` (a fresh one when None); drop reasons pre-declared at 0."""
    reg = registry if registry is not None else CollectorRegistry()
    p = PREFIX
    m = Metrics(
        registry=reg,
        build=Info(f"{p}_build", "fleetwave version.", registry=reg),
        devices=Gauge(f"{p}_devices", "Devices reporting each version of each component.",
                      ["component", "version"], registry=reg),
        devices_online=Gauge(f"{p}_devices_online", "Devices currently online.", registry=reg),
        rollout_phase=Gauge(f"{p}_rollout_phase", "1 for the rollout's current phase, else 0.",
                            ["rollout", "phase"], registry=reg),
        rollout_step=Gauge(f"{p}_rollout_current_step", "Index of the current wave, from 0.",
                           ["rollout"], registry=reg),
        rollout_targeted=Gauge(f"{p}_rollout_targeted_devices",
                               "Devices the rollout's selector matches.", ["rollout"],
                               registry=reg),
        rollout_progress=Gauge(f"{p}_rollout_progress_ratio",
                               "Share of targeted devices done (0-1).", ["rollout"],
                               registry=reg),
        rollout_failure_ratio=Gauge(f"{p}_rollout_failure_ratio",
                                    "Failed, timed out and unhealthy over terminal devices (0-1).",
                                    ["rollout"], registry=reg),
        rollout_devices=Gauge(f"{p}_rollout_devices", "Devices of a rollout per update state.",
                              ["rollout", "state"], registry=reg),
        updates=Counter(f"{p}_device_updates", "Device updates that reached a final state.",
                        ["component", "state"], registry=reg),
        update_duration=Histogram(f"{p}_update_duration_seconds",
                                  "Command sent to final state, per device update.",
                                  ["component", "state"], buckets=UPDATE_DURATION_BUCKETS,
                                  registry=reg),
        stale_updates=Gauge(f"{p}_stale_updates", "Open updates older than their timeout.",
                            registry=reg),
        reconcile_duration=Histogram(f"{p}_reconcile_duration_seconds",
                                     "One reconcile pass: gather, plan, execute, persist.",
                                     buckets=RECONCILE_BUCKETS, registry=reg),
        reconcile_errors=Counter(f"{p}_reconcile_errors", "Reconcile passes that failed.",
                                 registry=reg),
        mqtt_received=Counter(f"{p}_mqtt_messages_received", "MQTT messages received.",
                              ["kind"], registry=reg),
        mqtt_published=Counter(f"{p}_mqtt_messages_published", "MQTT messages published.",
                               ["kind"], registry=reg),
        mqtt_dropped=Counter(f"{p}_mqtt_messages_dropped", "Inbound MQTT messages dropped.",
                             ["reason"], registry=reg),
        mqtt_connected=Gauge(f"{p}_mqtt_connected", "1 while connected to the broker.",
                             registry=reg),
        source_revision=Gauge(f"{p}_source_revision_info",
                              "1 for the revision last synced from a source.",
                              ["source", "revision"], registry=reg),
        source_last_sync=Gauge(f"{p}_source_last_sync_timestamp_seconds",
                               "When a source last synced successfully.", ["source"],
                               registry=reg),
        source_sync_errors=Counter(f"{p}_source_sync_errors", "Failed source syncs.",
                                   ["source"], registry=reg),
        source_invalid_files=Gauge(f"{p}_source_invalid_files",
                                   "Files in the source that fail validation.", ["source"],
                                   registry=reg),
        notifications=Counter(f"{p}_notifications", "Outbound notifications by result.",
                              ["result"], registry=reg),
        **_edge_metrics(p, reg), **_dashboard_metrics(reg), **_leadership_metrics(reg),
        **_analysis_metrics(reg),
    )
    m.build.info({"version": __version__})
    for reason in DROP_REASONS:
        m.mqtt_dropped.labels(reason=reason)
    for reason in HEALTH_CHECK_REFUSALS:
        m.health_checks_refused.labels(reason=reason)
    for reason in REFUSAL_REASONS:
        m.commands_refused.labels(reason=reason)
    return m
