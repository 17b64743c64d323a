"""Webhook gates in the planner: a step with a gate starts only once its answer is open;
until then the rollout is Waiting with reason GateClosed and names the step to ask."""

from __future__ import annotations

import pytest

from fleetwave.planner.model import SendUpdate
from fleetwave.resources.loading import load_text
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


@pytest.mark.parametrize("url", [
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("ftp://gates.example.com/allow", id="ftp"),
    pytest.param("gates.example.com/allow", id="no-scheme"),
    pytest.param("https:///allow", id="no-host"),
])
def test_validate_refuses_a_webhook_url_that_is_not_http(url: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '3.0.0'\n  selector: {}\n"
            "  strategy:\n    steps:\n      - percent: 100\n"
            f"        gate: {{webhook: {{url: '{url}'}}}}\n")
    errors = load_text(text, "r.yaml").errors
    assert [(e.field, e.line) for e in errors] == [
        ("spec.strategy.steps[0].gate.webhook.url", 11)]
    assert "is not an http(s) URL" in errors[0].message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/gate", "HTTPS://gates.example.com/a"])
def test_validate_accepts_http_and_https_webhooks(url: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '3.0.0'\n  selector: {}\n"
            "  strategy:\n    steps:\n      - percent: 100\n"
            f"        gate: {{webhook: {{url: '{url}'}}}}\n")
    assert load_text(text, "r.yaml").errors == []
