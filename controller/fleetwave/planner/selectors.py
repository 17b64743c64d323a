"""Selectors compiled for the pass, and who may touch which device.

What a selector means is `fleetwave.resources.selectors.rollout_targets` (Kubernetes
semantics plus the explicit `devices` list): `validate`, `plan` and the schema read it
there. Matching here runs for every (rollout, device) pair of a pass, so this module
only compiles that same rule into one small closure instead of re-interpreting the
selector for 100,000 devices; a property test holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleetwave.planner.model import DeviceView
from fleetwave.resources.model import Operator, Rollout, Selector

Matcher = Callable[[DeviceView], bool]


def compile_selector(selector: Selector, exclude: tuple[str, ...] = ()) -> Matcher:
    """`rollout_targets` as a predicate on a device: targeted by `selector`, not excluded.

    >>> m = compile_selector(Selector(match_labels={"env": "prod"}), exclude=("d2",))
    >>> m(DeviceView("d1", labels={"env": "prod"})), m(DeviceView("d2", labels={"env": "prod"}))
    (True, False)

    A device listed in `devices` is targeted whatever its labels; otherwise all of
    matchLabels and matchExpressions must hold. An empty selector (`selector: {}`)
    targets every device, as in Kubernetes; the schema requires the field, so a Rollout
    that forgets its selector fails validation instead of reaching the whole fleet.
    """
    excluded = frozenset(exclude)
    explicit = frozenset(selector.devices)
    # matchLabels and single-value In terms are required (key, value) pairs, checked in
    # one C-level superset test of the device's items; the rest term by term, each
    # (key, operator, values) with values as a frozenset: one hash lookup per term.
    required = frozenset(selector.match_labels.items()) | {
        (r.key, r.values[0]) for r in selector.match_expressions
        if r.operator is Operator.IN and len(r.values) == 1}
    terms = tuple((r.key, r.operator, frozenset(r.values)) for r in selector.match_expressions
                  if not (r.operator is Operator.IN and len(r.values) == 1))
    has_label_terms = bool(selector.match_labels or selector.match_expressions)
    in_op, not_in_op, exists_op = Operator.IN, Operator.NOT_IN, Operator.EXISTS

    def matches(device: DeviceView) -> bool:
        uuid = device.uuid
        if uuid in excluded:
            return False
        if uuid in explicit:
            return True
        if not has_label_terms:
            return not explicit
        labels = device.labels
        if required and not labels.items() >= required:
            return False
        for key, op, values in terms:
            have = labels.get(key)
            if op is in_op:
                if have is None or have not in values:
                    return False
            elif op is not_in_op:
                if have is not None and have in values:
                    return False
            elif op is exists_op:
                if have is None:
                    return False
            elif have is not None:
                return False
        return True

    return matches


@dataclass(slots=True)
class Targets:
    """Which devices one rollout may touch, and which it may not because of another."""

    targeted: list[DeviceView] = field(default_factory=list)
    conflicted: list[str] = field(default_factory=list)
    conflicts_with: set[str] = field(default_factory=set)
    overridden: list[str] = field(default_factory=list)


def resolve_targets(rollouts: Sequence[Rollout],
                    devices: Sequence[DeviceView]) -> dict[str, Targets]:
    """Who may touch which device: the one rule `plan_fleet` and `fleetwave plan` share.

    Rollouts of one component that select the same device conflict and none of them
    touches it; a rollout from the API (an ad-hoc update) wins instead, and the others
    count the device as overridden.
    """
    out = {r.name: Targets() for r in rollouts}
    by_component: dict[str, list[Rollout]] = {}
    for r in sorted(rollouts, key=lambda r: r.name):
        by_component.setdefault(r.spec.component, []).append(r)
    for group in by_component.values():
        matchers = [(r, compile_selector(r.spec.selector, r.spec.exclude)) for r in group]
        if len(matchers) == 1:  # the common case: nothing to resolve
            r, m = matchers[0]
            out[r.name].targeted = [d for d in devices if m(d)]
            continue
        for d in devices:
            hits = [r for r, m in matchers if m(d)]
            if not hits:
                continue
            if len(hits) == 1:
                out[hits[0].name].targeted.append(d)
                continue
            api = [r for r in hits if r.source.kind == "api"]
            contenders = api or hits
            for r in hits:
                if api and r not in api:
                    out[r.name].overridden.append(d.uuid)
            if len(contenders) == 1:
                out[contenders[0].name].targeted.append(d)
                continue
            names = {r.name for r in contenders}
            for r in contenders:
                out[r.name].conflicted.append(d.uuid)
                out[r.name].conflicts_with.update(names - {r.name})
    return out
