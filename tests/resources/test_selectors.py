"""Selector semantics (Kubernetes label selectors plus explicit uuids) and the proofs that a
selector matches nothing, which `validate` turns into warnings."""

from __future__ import annotations

import pytest

from fleetwave.resources.model import Operator, Requirement, Selector
from fleetwave.resources.selectors import (
    empty_selector_reasons,
    requirement_matches,
    selector_matches,
)

IN, NOT_IN, EXISTS, ABSENT = Operator.IN, Operator.NOT_IN, Operator.EXISTS, Operator.DOES_NOT_EXIST
RPI4_PROD = {"device_type": "rpi4", "env": "production"}


@pytest.mark.parametrize(("requirement", "labels", "matches"), [
    pytest.param(Requirement("env", IN, ("production",)), RPI4_PROD, True, id="in"),
    pytest.param(Requirement("env", IN, ("staging",)), RPI4_PROD, False, id="in-other-value"),
    pytest.param(Requirement("site", IN, ("x",)), RPI4_PROD, False, id="in-needs-the-label"),
    pytest.param(Requirement("env", NOT_IN, ("production",)), RPI4_PROD, False, id="not-in"),
    pytest.param(Requirement("site", NOT_IN, ("x",)), RPI4_PROD, True,
                 id="not-in-matches-without-the-label"),
    pytest.param(Requirement("env", EXISTS), RPI4_PROD, True, id="exists"),
    pytest.param(Requirement("site", EXISTS), RPI4_PROD, False, id="exists-missing"),
    pytest.param(Requirement("site", ABSENT), RPI4_PROD, True, id="does-not-exist"),
    pytest.param(Requirement("env", ABSENT), RPI4_PROD, False, id="does-not-exist-present"),
])
def test_requirements(requirement: Requirement, labels: dict[str, str], matches: bool) -> None:
    assert requirement_matches(requirement, labels) is matches


@pytest.mark.parametrize(("selector", "labels", "uuid", "matches"), [
    pytest.param(Selector(), {}, "d1", True, id="empty-selects-everything"),
    pytest.param(Selector(match_labels={"device_type": "rpi4"}), RPI4_PROD, "d1", True,
                 id="match-labels"),
    pytest.param(Selector(match_labels={"device_type": "rpi4", "env": "staging"}), RPI4_PROD,
                 "d1", False, id="match-labels-are-anded"),
    pytest.param(Selector(match_labels={"device_type": "rpi4"},
                          match_expressions=(Requirement("env", NOT_IN, ("production",)),)),
                 RPI4_PROD, "d1", False, id="labels-and-expressions-are-anded"),
    pytest.param(Selector(devices=("d1",)), {}, "d1", True, id="devices-only-listed"),
    pytest.param(Selector(devices=("d1",)), RPI4_PROD, "d2", False,
                 id="devices-only-not-listed"),
    pytest.param(Selector(match_labels={"env": "staging"}, devices=("d1",)), RPI4_PROD, "d1",
                 True, id="devices-add-to-labels"),
    pytest.param(Selector(match_labels={"env": "production"}, devices=("d1",)), RPI4_PROD,
                 "d2", True, id="labels-still-select-beside-devices"),
])
def test_selector_matches(selector: Selector, labels: dict[str, str], uuid: str,
                          matches: bool) -> None:
    assert selector_matches(selector, labels, uuid) is matches


@pytest.mark.parametrize(("selector", "exclude", "path"), [
    pytest.param(Selector(match_expressions=(Requirement("env", IN, ("a",)),
                                             Requirement("env", NOT_IN, ("a",)))),
                 (), ("selector", "matchExpressions", 1), id="in-and-not-in-the-same"),
    pytest.param(Selector(match_labels={"env": "a"},
                          match_expressions=(Requirement("env", ABSENT),)),
                 (), ("selector", "matchExpressions", 0), id="match-labels-and-does-not-exist"),
    pytest.param(Selector(match_labels={"env": "a"},
                          match_expressions=(Requirement("env", IN, ("b", "c")),)),
                 (), ("selector", "matchExpressions", 0), id="match-labels-and-in-without-it"),
    pytest.param(Selector(match_expressions=(Requirement("env", EXISTS),
                                             Requirement("env", ABSENT))),
                 (), ("selector", "matchExpressions", 1), id="exists-and-does-not-exist"),
    pytest.param(Selector(match_expressions=(Requirement("env", IN, ("a",)),
                                             Requirement("env", IN, ("b",)))),
                 (), ("selector", "matchExpressions", 1), id="two-disjoint-ins"),
    pytest.param(Selector(devices=("d1", "d2")), ("d1", "d2", "d3"), ("selector", "devices"),
                 id="every-listed-device-excluded"),
])
def test_provably_empty_selectors(selector: Selector, exclude: tuple[str, ...],
                                  path: tuple[str | int, ...]) -> None:
    [reason] = empty_selector_reasons(selector, exclude)
    assert reason.path == path
    assert reason.message.startswith("this selector matches no device")


@pytest.mark.parametrize(("selector", "exclude"), [
    pytest.param(Selector(), (), id="everything"),
    pytest.param(Selector(match_expressions=(Requirement("env", IN, ("a", "b")),
                                             Requirement("env", NOT_IN, ("a",)))),
                 (), id="in-minus-not-in-leaves-a-value"),
    pytest.param(Selector(match_expressions=(Requirement("env", NOT_IN, ("a",)),
                                             Requirement("env", ABSENT))),
                 (), id="not-in-and-absent-is-fine"),
    pytest.param(Selector(devices=("d1", "d2")), ("d1",), id="one-device-left"),
    pytest.param(Selector(match_labels={"env": "a"}, devices=("d1",)), ("d1",),
                 id="labels-may-still-match"),
])
def test_selectors_that_may_match_are_not_reported(selector: Selector,
                                                   exclude: tuple[str, ...]) -> None:
    assert empty_selector_reasons(selector, exclude) == []
