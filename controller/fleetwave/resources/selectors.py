"""Which devices a selector picks, and whether it provably picks none.

Kubernetes label-selector semantics (matchLabels and matchExpressions are
ANDed; NotIn and DoesNotExist match a device without the label), plus
fleetwave's explicit `devices` list, which adds uuids whatever their labels.
The planner, `fleetwave plan` and `fleetwave validate --fleet` all call
`selector_matches`, so "which devices does this rollout touch" has one answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from fleetwave.resources.model import Operator, Requirement, RolloutSpec, Selector


def requirement_matches(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    """One matchExpressions entry against a device's labels.

    >>> requirement_matches(Requirement("env", Operator.NOT_IN, ("dev",)), {})
    True
    """
    present = requirement.key in labels
    if requirement.operator is Operator.IN:
        return present and labels[requirement.key] in requirement.values
    if requirement.operator is Operator.NOT_IN:
        return not present or labels[requirement.key] not in requirement.values
    if requirement.operator is Operator.EXISTS:
        return present
    return not present


def has_label_terms(selector: Selector) -> bool:
    """Whether the selector says anything about labels (else it is uuids only, or everything)."""
    return bool(selector.match_labels or selector.match_expressions)


def labels_match(selector: Selector, labels: Mapping[str, str]) -> bool:
    """matchLabels and every matchExpressions entry hold (ignores `devices`)."""
    return (all(labels.get(k) == v for k, v in selector.match_labels.items())
            and all(requirement_matches(r, labels) for r in selector.match_expressions))


def selector_matches(selector: Selector, labels: Mapping[str, str], uuid: str) -> bool:
    """Whether the device `uuid` with `labels` is selected.

    An empty selector selects every device; `devices` alone selects exactly those
    uuids; `devices` with label terms selects the union.

    >>> selector_matches(Selector(match_labels={"type": "rpi4"}), {"type": "rpi4"}, "d1")
    True
    >>> selector_matches(Selector(devices=("d2",)), {}, "d1")
    False
    >>> selector_matches(Selector(), {}, "d1")
    True
    """
    if uuid in selector.devices:
        return True
    if has_label_terms(selector):
        return labels_match(selector, labels)
    return not selector.devices


def rollout_targets(spec: RolloutSpec, labels: Mapping[str, str], uuid: str) -> bool:
    """Selected and not pinned by `exclude`: the devices a Rollout may send commands to."""
    return uuid not in spec.exclude and selector_matches(spec.selector, labels, uuid)


@dataclass(frozen=True, slots=True)
class EmptySelector:
    """Why a selector can match no device: the field that proves it and a message."""

    path: tuple[str | int, ...]
    """Relative to the selector's parent spec, e.g. ("selector", "matchExpressions", 1)."""
    message: str


@dataclass(slots=True)
class _KeyConstraint:
    """Everything the selector demands of one label key, with where each demand comes from."""

    allowed: set[str] | None = None
    allowed_by: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)
    forbidden_by: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)
    exists_by: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)
    absent_by: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)


def _fmt(values: Collection[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _label_contradictions(selector: Selector) -> Iterator[EmptySelector]:
    keys: dict[str, _KeyConstraint] = {}
    for key, value in selector.match_labels.items():
        c = keys.setdefault(key, _KeyConstraint())
        c.allowed = {value} if c.allowed is None else c.allowed & {value}
        c.allowed_by.append((("selector", "matchLabels", key), f"matchLabels {key}={value}"))
    for i, r in enumerate(selector.match_expressions):
        c = keys.setdefault(r.key, _KeyConstraint())
        where = ("selector", "matchExpressions", i)
        said = f"matchExpressions[{i}] {r.key} {r.operator.value}" + (
            f" {_fmt(r.values)}" if r.values else "")
        if r.operator is Operator.IN:
            c.allowed = set(r.values) if c.allowed is None else c.allowed & set(r.values)
            c.allowed_by.append((where, said))
        elif r.operator is Operator.NOT_IN:
            c.forbidden |= set(r.values)
            c.forbidden_by.append((where, said))
        elif r.operator is Operator.EXISTS:
            c.exists_by.append((where, said))
        else:
            c.absent_by.append((where, said))
    for key, c in keys.items():
        requires = c.allowed_by + c.exists_by
        if c.absent_by and requires:
            (path, said), (_, other) = c.absent_by[0], requires[0]
            yield EmptySelector(path, f"this selector matches no device: {said} contradicts "
                                      f"{other}; remove one of them")
        elif c.allowed is not None and not (c.allowed - c.forbidden):
            culprit = (c.forbidden_by or c.allowed_by)[-1]
            others = [s for _, s in c.allowed_by + c.forbidden_by if s != culprit[1]]
            why = f" together with {'; '.join(others)}" if others else ""
            yield EmptySelector(culprit[0], f"this selector matches no device: no value of "
                                            f"label {key!r} satisfies {culprit[1]}{why}")


def empty_selector_reasons(selector: Selector,
                           exclude: Collection[str] = ()) -> list[EmptySelector]:
    """Reasons, found without looking at any fleet, why the selector targets no device.

    Only proofs count (contradictory label terms, every listed uuid excluded): a
    selector that merely matches no device *today* is fine, devices come later.
    """
    label_reasons = list(_label_contradictions(selector)) if has_label_terms(selector) else []
    label_side_empty = has_label_terms(selector) and bool(label_reasons)
    if selector.devices:
        remaining = [d for d in selector.devices if d not in exclude]
        if remaining:
            return []
        if has_label_terms(selector) and not label_side_empty:
            return []
        return [*label_reasons, EmptySelector(
            ("selector", "devices"),
            "this selector matches no device: every uuid in selector.devices is also in "
            "exclude.devices; remove them from exclude or pick other devices")]
    return label_reasons
