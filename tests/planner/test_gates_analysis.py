"""Analysis gates in the planner (`analysis.prometheus`): a step moves on only once its
query's answer has been in bounds for `for` since its wave finished; out of bounds for
`for` applies failurePolicy.action with reason AnalysisFailed; no answer or an
unavailable one never passes and never fails."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import AnalysisResult, Plan, SendRollback, SendUpdate
from fleetwave.planner.plan import apply_control
from fleetwave.planner.preview import preview
from fleetwave.resources.loading import load_text
from fleetwave.resources.model import Rollout
from tests.planner.fleet import T0, FakeFleet, fleet, make_rollout

FOR = 300.0
ANALYSIS = {"prometheus": {"url": "http://127.0.0.1:9090", "query": "error_ratio",
                           "max": 0.05, "for": "5m"}}


def analysed(*, on: int = 0, action: str = "pause", pause: str | None = None,
             devices: int = 100) -> tuple[Rollout, FakeFleet]:
    steps: list[dict[str, Any]] = [{"percent": 10}, {"percent": 100}]
    steps[on] = {**steps[on], "analysis": ANALYSIS, **({"pause": pause} if pause else {})}
    r = make_rollout(strategy={"steps": steps}, health={"stableFor": "1s"},
                     failurePolicy={"action": action})
    return r, FakeFleet([r], fleet(devices))


def wave_done(f: FakeFleet, r: Rollout, at: float = T0) -> tuple[float, Plan]:
    """Plan every 10 s until the current step's wave has finished; (time, last plan)."""
    now = at
    while True:
        p = f.step(now).plans[r.name]
        if p.state.step_finished_at is not None or p.state.completed_at is not None:
            return now, p
        now += 10
        assert now < at + 3600, p.status


def reason(p: Plan) -> str:
    return {c.type: c for c in p.status.conditions}[
        "Waiting" if p.status.phase == "Waiting" else
        "Paused" if p.status.phase == "Paused" else "Progressing"].reason


def answer(r: Rollout, outcome: str, since: float, step: int = 0,
           value: float = 0.01) -> dict[tuple[str, int], AnalysisResult]:
    return {(r.name, step): AnalysisResult(outcome, since, value,  # type: ignore[arg-type]
                                           "connection refused")}


@pytest.mark.parametrize(("outcome", "since", "after", "phase", "why", "step"), [
    pytest.param(None, 0, FOR * 10, "Progressing", "AnalysisRunning", 0, id="no-answer-yet"),
    pytest.param("unavailable", -600, FOR * 10, "Waiting", "AnalysisUnavailable", 0,
                 id="unavailable-never-passes"),
    pytest.param("in_bounds", -600, FOR - 1, "Progressing", "AnalysisRunning", 0,
                 id="in-bounds-counts-from-the-wave-not-before"),
    pytest.param("in_bounds", -600, FOR, "Progressing", "StepInProgress", 1,
                 id="in-bounds-for-for-passes"),
    pytest.param("in_bounds", 60, FOR + 59, "Progressing", "AnalysisRunning", 0,
                 id="in-bounds-since-later-counts-from-then"),
    pytest.param("out_of_bounds", 0, 1, "Progressing", "AnalysisRunning", 0,
                 id="briefly-out-is-no-failure-yet"),
    pytest.param("out_of_bounds", -10_000, FOR, "Paused", "AnalysisFailed", 0,
                 id="out-of-bounds-for-for-since-the-step-started-pauses"),
])
def test_a_step_moves_on_only_after_for_in_bounds(outcome: str | None, since: float,
                                                  after: float, phase: str, why: str,
                                                  step: int) -> None:
    r, f = analysed()
    done, p = wave_done(f, r)
    assert p.awaiting_analysis == 0
    if outcome is not None:
        f.analysis_results = answer(r, outcome, done + since)
    p = f.step(done + after).plans[r.name]
    assert (p.status.phase, reason(p), p.state.current_step) == (phase, why, step)
    sends = [a for a in p.actions if isinstance(a, SendUpdate)]
    assert bool(sends) is (step == 1)


def test_the_clock_wakes_the_loop_when_for_is_reached() -> None:
    r, f = analysed()
    done, _ = wave_done(f, r)
    f.analysis_results = answer(r, "in_bounds", done + 20)
    p = f.step(done + 30).plans[r.name]
    assert p.next_wake == done + 20 + FOR
    f.analysis_results = answer(r, "out_of_bounds", done + 40)
    p = f.step(done + 50).plans[r.name]
    started = p.state.step_started_at
    assert started is not None and p.next_wake == max(done + 40, started) + FOR


@pytest.mark.parametrize(("action", "phase"), [
    pytest.param("pause", "Paused", id="pause"),
    pytest.param("rollback", "RolledBack", id="rollback"),
    pytest.param("abort", "Aborted", id="abort"),
])
def test_out_of_bounds_for_for_applies_the_failure_policy(action: str, phase: str) -> None:
    r, f = analysed(action=action)
    done, _ = wave_done(f, r)
    f.analysis_results = answer(r, "out_of_bounds", done, value=0.4)
    p = f.step(done + FOR).plans[r.name]
    assert (p.status.phase, reason(p) if phase == "Paused" else None) == (
        phase, "AnalysisFailed" if phase == "Paused" else None)
    cond = {c.type: c for c in p.status.conditions}[
        {"Paused": "Paused", "RolledBack": "RolledBack", "Aborted": "Aborted"}[phase]]
    assert (cond.status, cond.reason) == ("True", "AnalysisFailed")
    [failed] = [e for e in p.events if e.reason == "AnalysisFailed"]
    assert "error_ratio = 0.4 outside [-inf, 0.05] for 5m" in failed.message
    assert p.awaiting_analysis is None
    later = f.step(done + FOR + 1).plans[r.name]
    rollbacks = [a for a in later.actions if isinstance(a, SendRollback)]
    assert len(rollbacks) == (10 if action == "rollback" else 0)


def test_a_failure_before_the_wave_finishes_stops_the_wave() -> None:
    r, f = analysed(on=1, devices=200)
    now, _ = wave_done(f, r)
    p = f.step(now + 10).plans[r.name]  # step 2 starts: its analysis runs with its wave
    assert p.state.current_step == 1 and p.awaiting_analysis == 1
    started = p.state.step_started_at
    assert started is not None
    f.analysis_results = answer(r, "out_of_bounds", started - 500, step=1)
    p = f.step(started + FOR).plans[r.name]
    assert (p.status.phase, reason(p)) == ("Paused", "AnalysisFailed")


def test_the_last_steps_analysis_holds_completion() -> None:
    r, f = analysed(on=1)
    now, _ = wave_done(f, r)
    now, p = wave_done(f, r, now + 10)
    assert p.state.current_step == 1 and p.state.completed_at is None
    assert p.status.phase == "Progressing" and reason(p) == "AnalysisRunning"
    f.analysis_results = answer(r, "in_bounds", now, step=1)
    assert f.step(now + FOR - 1).plans[r.name].status.phase == "Progressing"
    p = f.step(now + FOR).plans[r.name]
    assert p.status.phase == "Completed" and p.awaiting_analysis is None


def test_the_pause_and_the_analysis_soak_together() -> None:
    r, f = analysed(pause="10m")
    done, _ = wave_done(f, r)
    f.analysis_results = answer(r, "in_bounds", done)
    p = f.step(done + FOR).plans[r.name]
    assert (p.status.phase, reason(p), p.state.current_step) == ("Paused", "StepPause", 0)
    assert f.step(done + 600).plans[r.name].state.current_step == 1


def test_resume_after_an_analysis_failure_runs_the_analysis_again() -> None:
    r, f = analysed()
    done, _ = wave_done(f, r)
    f.analysis_results = answer(r, "out_of_bounds", done)
    p = f.step(done + FOR).plans[r.name]
    assert p.state.paused_by == "analysis" and p.awaiting_analysis is None
    f.analysis_results = {}  # the runner forgot it: no step of this rollout was awaited
    f.states[r.name], _ = apply_control(p.state, "resume", done + FOR + 10)
    p = f.step(done + FOR + 20).plans[r.name]
    assert (p.status.phase, reason(p), p.awaiting_analysis) == (
        "Progressing", "AnalysisRunning", 0)


# -- properties ----------------------------------------------------------------------------

OUTCOMES = st.sampled_from(["in_bounds", "out_of_bounds", "unavailable"])


def results_at(r: Rollout, samples: list[tuple[float, str]], now: float,
               step: int) -> dict[tuple[str, int], AnalysisResult]:
    """What the runner would hand over at `now`: the last outcome and when its run began."""
    seen = [(t, o) for t, o in samples if t <= now]
    if not seen:
        return {}
    last = seen[-1][1]
    since = seen[-1][0]
    for t, o in reversed(seen):
        if o != last:
            break
        since = t
    return {(r.name, step): AnalysisResult(last, since, 0.0)}  # type: ignore[arg-type]


def run_of(samples: list[tuple[float, str]], now: float, outcome: str) -> float | None:
    """When the unbroken run of `outcome` samples that ends with the last one by `now` began
    (None: the last sample by `now` is another outcome)."""
    seen = [(t, o) for t, o in samples if t <= now]
    run = list(itertools.takewhile(lambda s: s[1] == outcome, reversed(seen)))
    return run[-1][0] if run else None


@settings(max_examples=40, deadline=None)
@given(runs=st.lists(st.tuples(OUTCOMES, st.integers(1, 25)), min_size=1, max_size=5),
       every=st.sampled_from([15.0, 30.0, 60.0]))
def test_no_step_finishes_without_for_of_in_bounds_samples(runs: list[tuple[str, int]],
                                                          every: float) -> None:
    r, f = analysed(action="pause", devices=20)
    done, p = wave_done(f, r)
    started = p.state.step_started_at
    assert started is not None
    outcomes = [o for o, n in runs for _ in range(n)]  # runs of equal answers, long or short
    samples = [(done - 200 + i * every, o) for i, o in enumerate(outcomes)]
    now = done
    while now <= samples[-1][0] + FOR + every:
        f.analysis_results = results_at(r, samples, now, 0)
        p = f.step(now).plans[r.name]
        if p.state.current_step == 1:
            began = run_of(samples, now, "in_bounds")
            assert began is not None, "moved on without an in-bounds answer"
            assert now - max(began, done) >= FOR
            return
        if p.state.paused_by == "analysis":
            began = run_of(samples, now, "out_of_bounds")
            assert began is not None and now - max(began, started) >= FOR
            return
        now += 15


@settings(max_examples=40, deadline=None)
@given(gaps=st.lists(st.floats(1, 3600), min_size=1, max_size=20),
       action=st.sampled_from(["pause", "rollback", "abort"]))
def test_an_unavailable_analysis_never_passes_nor_fails(gaps: list[float], action: str) -> None:
    r, f = analysed(action=action, devices=20)
    done, _ = wave_done(f, r)
    f.analysis_results = answer(r, "unavailable", done - 3600)
    now = done
    for gap in gaps:
        now += gap
        p = f.step(now).plans[r.name]
        assert p.state.current_step == 0 and p.state.completed_at is None
        assert (p.status.phase, reason(p)) == ("Waiting", "AnalysisUnavailable")
        assert p.state.paused_by is None and p.state.rolled_back is None
        assert p.state.aborted is None and p.awaiting_analysis == 0


# -- validation ----------------------------------------------------------------------------

P = "spec.strategy.steps[0].analysis.prometheus"


@pytest.mark.parametrize(("prometheus", "field", "says"), [
    pytest.param("{url: 'http://p:9090', query: up}", P, "needs min, max or both",
                 id="no-bounds"),
    pytest.param("{url: 'http://p:9090', query: up, min: 5, max: 1}", f"{P}.max",
                 "max 1 is below min 5", id="min-above-max"),
    pytest.param("{url: 'ftp://p', query: up, max: 1}", f"{P}.url",
                 "not an http:// or https:// URL", id="url-scheme"),
    pytest.param("{url: 'http://p:9090', query: up, max: 1, for: soon}", f"{P}.for",
                 "is not a duration", id="for-not-a-duration"),
    pytest.param("{url: 'http://p:9090', max: 1}", f"{P}.query", "missing", id="no-query"),
])
def test_validate_refuses_a_wrong_analysis_by_file_line_and_field(prometheus: str, field: str,
                                                                  says: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '3.0.0'\n  selector: {}\n"
            "  strategy:\n    steps:\n      - percent: 100\n"
            f"        analysis:\n          prometheus: {prometheus}\n")
    errors = load_text(text, "r.yaml").errors
    assert [e.field for e in errors] == [field], errors
    assert says in errors[0].message and errors[0].line == 12


def test_a_valid_analysis_loads_typed() -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '3.0.0'\n  selector: {}\n"
            "  strategy:\n    steps:\n      - percent: 100\n        analysis:\n"
            "          prometheus: {url: 'https://p', query: up, min: 1, for: 90s}\n")
    loaded = load_text(text, "r.yaml")
    assert loaded.ok
    [rollout] = [d.resource for d in loaded.documents]
    assert isinstance(rollout, Rollout)
    spec = rollout.spec.strategy.steps[0].analysis
    assert spec is not None
    assert (spec.url, spec.query, spec.minimum, spec.maximum, spec.for_.total_seconds()) == (
        "https://p", "up", 1.0, None, 90.0)
    assert spec.within(1.0) and not spec.within(0.99)


# -- fleetwave plan ------------------------------------------------------------------------


def test_the_preview_says_a_wave_waits_for_its_analysis_and_starts_the_next_after_for() -> None:
    steps = [{"percent": 10, "pause": "2m", "analysis": {"prometheus": {
        **ANALYSIS["prometheus"], "for": "10m"}}}, {"percent": 100}]
    r = make_rollout(strategy={"steps": steps})
    shown = preview([r], fleet(100), T0).rollouts[0]
    first, second = shown.waves
    assert first.sending_done is not None and second.ready_at is not None
    assert second.ready_at == first.sending_done + 600, "the next wave waits for `for`"
    [note] = [n for n in shown.notes if "analysis" in n]
    assert note.startswith("wave 1 waits for its analysis: error_ratio inside "
                           "[-inf, 0.05] for 10m after the wave")


def test_fleetwave_plan_shows_the_analysis(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
        "spec:\n  component: agent\n  version: '1.0.6'\n  selector: {}\n"
        "  strategy:\n    steps:\n      - percent: 5\n        analysis:\n"
        "          prometheus: {url: 'http://p:9090', query: up, min: 1, for: 1m}\n"
        "      - percent: 100\n")
    snapshot = Path(__file__).resolve().parents[1] / "fixtures" / "fleet-snapshot.json"
    proc = subprocess.run([str(Path(sys.executable).parent / "fleetwave"), "plan", str(path),
                           "--fleet", str(snapshot), "--now", "2026-03-28T12:00:00Z"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert ("note: wave 1 waits for its analysis: up inside [1, +inf] for 1m after the wave"
            in proc.stdout), proc.stdout
