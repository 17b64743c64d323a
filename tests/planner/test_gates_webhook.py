"""Webhook gates in the planner: a step with a gate starts only once its answer is open;
until then the rollout is Waiting with reason GateClosed and names the step to ask."""

from __future__ import annotations

import pytest

from fleetwave.planner.model import SendUpdate
from tests.planner.fleet import T0, FakeFleet, fleet, make_rollout

GATE = {"webhook": {"url": "http://127.0.0.1:1/gate", "secretRef": "GATE_SECRET"}}


def gated(step: int) -> dict[str, object]:
    steps: list[dict[str, object]] = [{"percent": 10}, {"percent": 100}]
    steps[step] = {**steps[step], "gate": GATE}
    return {"steps": steps}


@pytest.mark.parametrize(("step", "answer", "phase", "sends"), [
    pytest.param(0, None, "Waiting", False, id="first-step-unanswered"),
    pytest.param(0, False, "Waiting", False, id="first-step-closed"),
    pytest.param(0, True, "Progressing", True, id="first-step-open"),
])
def test_a_gate_on_the_first_step_holds_the_start(step: int, answer: bool | None,
                                                  phase: str, sends: bool) -> None:
    r = make_rollout(strategy=gated(step))
    f = FakeFleet([r], fleet(100))
    f.gate_results = {} if answer is None else {(r.name, step): answer}
    p = f.step(T0).plans[r.name]
    assert p.status.phase == phase
    assert any(isinstance(a, SendUpdate) for a in p.actions) is sends
    if not sends:
        waiting = {c.type: c for c in p.status.conditions}["Waiting"]
        assert (waiting.status, waiting.reason) == ("True", "GateClosed")
        assert p.awaiting_gate == 0 and not p.settled


def test_a_gate_on_a_later_step_holds_only_that_step_then_opens() -> None:
    r = make_rollout(strategy=gated(1))
    f = FakeFleet([r], fleet(100))
    f.run(T0, T0 + 3600, tick=60)
    p = f.log[-1]
    assert (p.status.phase, p.state.current_step, p.awaiting_gate) == ("Waiting", 0, 1)
    assert len(f.updated(r.name)) == 10
    f.gate_results = {(r.name, 1): False}
    f.step(T0 + 3600)
    assert len(f.updated(r.name)) == 10
    f.gate_results = {(r.name, 1): True}
    f.run(T0 + 3660, T0 + 3 * 3600, tick=60)
    assert f.log[-1].status.phase == "Completed"
    assert f.log[-1].awaiting_gate is None
