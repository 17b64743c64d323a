"""Analyses of rollout steps: the I/O half of `analysis.prometheus`.

The planner only reads answers (`AnalysisResults`) and says which step's analysis runs
(`Plan.awaiting_analysis`); querying happens here, in the background like the webhook
gates in gates.py, so a slow Prometheus never holds up a pass. Each running analysis
sends `GET {url}/api/v1/query?query=...` every `sample_interval`, with a timeout and a
bounded body, and keeps the outcome with since when it has held. Only a change of
outcome wakes the reconciler (for that rollout's component) and becomes an event, so
a steady metric costs a query, not a pass. A step the plans no longer await is
forgotten: a paused rollout resumes with a fresh run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog
from prometheus_client import Counter

from fleetwave import __version__
from fleetwave.planner.analysis import bounds
from fleetwave.planner.model import (
    AnalysisOutcome,
    AnalysisResult,
    AnalysisResults,
    PlannedEvent,
)
from fleetwave.resources.model import PrometheusAnalysis, Rollout
from fleetwave.runtime.answers import read_json

log = structlog.get_logger("fleetwave.analysis")

MAX_ANSWER_BYTES = 64 * 1024
"""An instant query of one series answers in well under 1 KiB; a longer body is read no
further and is unavailable (a query that matches a whole fleet's series, say)."""

EVENT_REASONS: Mapping[AnalysisOutcome, tuple[Literal["Normal", "Warning"], str]] = {
    "in_bounds": ("Normal", "AnalysisInBounds"),
    "out_of_bounds": ("Warning", "AnalysisOutOfBounds"),
    "unavailable": ("Warning", "AnalysisUnavailable"),
}


def sample_interval(spec: PrometheusAnalysis) -> float:
    """Seconds between queries: a fifth of `for`, within 1-15 s, so that `for` is judged on
    several samples and a long soak does not flood Prometheus.

    >>> from datetime import timedelta
    >>> [sample_interval(PrometheusAnalysis("u", "q", for_=timedelta(seconds=s)))
    ...  for s in (0, 30, 600)]
    [1.0, 6.0, 15.0]
    """
    return min(15.0, max(1.0, spec.for_.total_seconds() / 5))


def read_answer(doc: Any) -> tuple[float | None, str]:
    """The one number in a Prometheus instant-query answer, or None and why there is none.

    >>> read_answer({"status": "success", "data": {"resultType": "scalar",
    ...                                            "result": [1.5, "0.25"]}})
    (0.25, '')
    >>> read_answer({"status": "success", "data": {"resultType": "vector", "result": []}})
    (None, 'no data')
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("data", {}), dict):
        return None, "the answer is not a Prometheus API answer"
    if doc.get("status") != "success":
        return None, f"query failed: {str(doc.get('error', 'no reason given'))[:200]}"
    data = doc.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    point: Any = None
    if kind == "scalar":
        point = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None, "no data"
        if len(result) > 1:
            return None, f"{len(result)} series, not one"
        point = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        return None, f"a {kind} result, not a scalar or one sample"
    try:
        value = float(point[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None, "the sample is not a number"
    if math.isnan(value):
        return None, "the result is NaN"
    return value, ""


@dataclass(slots=True)
class _Run:
    """One step's analysis while its plans await it."""

    rollout: str
    component: str
    step: int
    version: str
    spec: PrometheusAnalysis
    result: AnalysisResult | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class AnalysisRunner:
    """Queries each awaited step's Prometheus in the background and keeps the outcomes."""

    def __init__(self, wake: Callable[[str], None], *, queries: Counter | None = None,
                 clock: Callable[[], float] = time.time, timeout: float = 5.0) -> None:
        self._wake = wake
        """Called with the rollout's component when an outcome changes."""
        self._queries = queries
        """fleetwave_analysis_queries_total, counted by result."""
        self.clock = clock
        self.timeout = timeout
        """Seconds a query may take; a slower answer is unavailable."""
        self._runs: dict[str, _Run] = {}
        self._events: list[tuple[str, PlannedEvent]] = []

    def results(self, desired: Mapping[str, Rollout]) -> AnalysisResults:
        """Outcomes that still apply: the same rollout at the same version."""
        return {(name, run.step): run.result for name, run in self._runs.items()
                if run.result is not None and name in desired
                and desired[name].spec.version == run.version}

    def drain_events(self) -> list[tuple[str, PlannedEvent]]:
        """(rollout, event) of every change of outcome since the last call."""
        events, self._events = self._events, []
        return events

    def follow(self, name: str, rollout: Rollout | None, step: int | None) -> None:
        """Run step `step`'s analysis of `rollout` (None: run none for `name`)."""
        run = self._runs.get(name)
        spec = (rollout.spec.strategy.steps[step].analysis
                if rollout is not None and step is not None else None)
        if (run is not None and rollout is not None and spec is not None
                and (run.step, run.version, run.spec) == (step, rollout.spec.version, spec)):
            return
        if run is not None:
            del self._runs[name]
            if run.task is not None:
                run.task.cancel()
        if rollout is None or step is None or spec is None:
            return
        run = self._runs[name] = _Run(name, rollout.spec.component, step, rollout.spec.version,
                                      spec)
        run.task = asyncio.create_task(self._sample(run), name=f"analysis-{name}-{step}")

    async def _sample(self, run: _Run) -> None:
        headers = {"User-Agent": f"fleetwave/{__version__}", "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                try:
                    value, why = await self._query(session, run.spec)
                except Exception as exc:  # never leave an old answer standing for a new one
                    log.exception("analysis.query_failed", rollout=run.rollout)
                    value, why = None, f"error ({type(exc).__name__})"
                self._record(run, value, why)
                await asyncio.sleep(sample_interval(run.spec))

    async def _query(self, session: aiohttp.ClientSession,
                     spec: PrometheusAnalysis) -> tuple[float | None, str]:
        url = spec.url.rstrip("/") + "/api/v1/query"
        answer = await read_json(session.get(url, params={"query": spec.query},
                                             allow_redirects=False), MAX_ANSWER_BYTES)
        if answer.status is None:
            return None, answer.problem
        if answer.problem:
            return None, f"HTTP {answer.status}, {answer.problem}"
        value, why = read_answer(answer.doc)
        if value is not None and not 200 <= answer.status < 300:
            return None, f"HTTP {answer.status}"
        return value, why

    def _record(self, run: _Run, value: float | None, why: str) -> None:
        if self._runs.get(run.rollout) is not run:
            return  # forgotten while the query was under way
        outcome: AnalysisOutcome = ("unavailable" if value is None else
                                    "in_bounds" if run.spec.within(value) else "out_of_bounds")
        if self._queries is not None:
            self._queries.labels(result=outcome).inc()
        before = run.result
        same = before is not None and before.outcome == outcome
        run.result = AnalysisResult(outcome, before.since if before and same else self.clock(),
                                    value, why)
        if same:
            return
        kind, reason = EVENT_REASONS[outcome]
        seen = f"{run.spec.query} = {value:g}" if value is not None else why
        where = {"in_bounds": "inside", "out_of_bounds": "outside"}.get(outcome)
        self._events.append((run.rollout, PlannedEvent(
            kind, reason, f"step {run.step + 1} analysis: {seen}"
            + (f", {where} {bounds(run.spec)}" if where else ""))))
        log.info("analysis changed", rollout=run.rollout, step=run.step + 1, outcome=outcome,
                 value=value, why=why)
        self._wake(run.component)

    async def close(self) -> None:
        """Stop every analysis (the process is stopping)."""
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        self._runs.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
