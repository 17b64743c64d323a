"""AnalysisRunner against a real Prometheus scraping a page the test controls, and against
an HTTP server that answers what no Prometheus should: every answer that is not one number
is `unavailable`, a change of outcome wakes the loop once and becomes one event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from fleetwave.metrics import build_metrics
from fleetwave.mqtt.broker import free_port
from fleetwave.planner.model import AnalysisResult
from fleetwave.resources.model import Rollout
from fleetwave.runtime.analysis import AnalysisRunner
from tests.analysis.prometheus import MetricsPage, Prometheus
from tests.planner.fleet import make_rollout
from tests.support.http import serve


def analysed(name: str, url: str, query: str, *, version: str = "1.0.6",
             **bounds: Any) -> Rollout:
    prom = {"url": url, "query": query, **(bounds or {"max": 0.05})}
    return make_rollout(name, version=version, strategy={"steps": [
        {"percent": 10, "analysis": {"prometheus": prom}}, {"percent": 100}]})


class Woken:
    """The runner's wake callback: which components it woke, in order."""

    def __init__(self) -> None:
        self.components: list[str] = []
        self.event = asyncio.Event()

    def __call__(self, component: str) -> None:
        self.components.append(component)
        self.event.set()

    async def next(self) -> None:
        await self.event.wait()
        self.event.clear()


async def outcomes(runner: AnalysisRunner, woken: Woken,
                   rollouts: list[Rollout]) -> dict[str, AnalysisResult]:
    """Wait until every rollout's analysis has answered; its result by rollout name."""
    desired = {r.name: r for r in rollouts}
    async with asyncio.timeout(15):
        while len(runner.results(desired)) < len(rollouts):
            await woken.next()
    return {name: result for (name, _), result in runner.results(desired).items()}


async def test_what_prometheus_answers_becomes_an_outcome(prometheus: Prometheus) -> None:
    url = prometheus.url
    cases = {
        "in": (analysed("in", url, "app_good_ratio"), "in_bounds", 0.01, ""),
        "out": (analysed("out", url, "app_bad_ratio"), "out_of_bounds", 0.5, ""),
        "scalar": (analysed("scalar", url, "scalar(app_good_ratio) * 100", min=0.5, max=2),
                   "in_bounds", 1.0, ""),
        "no-data": (analysed("no-data", url, "app_never_exported"), "unavailable", None,
                    "no data"),
        "two-series": (analysed("two-series", url, "app_series", max=5), "unavailable", None,
                       "2 series, not one"),
        "bad-promql": (analysed("bad-promql", url, "rate(app_flip"), "unavailable", None,
                       "query failed"),
        "refused": (analysed("refused", f"http://127.0.0.1:{free_port()}", "up"),
                    "unavailable", None, "unreachable"),
        "string": (analysed("string", url, '"text"', max=1), "unavailable", None,
                   "a string result"),
    }
    registry = CollectorRegistry()
    metrics = build_metrics(registry)
    woken = Woken()
    runner = AnalysisRunner(woken, queries=metrics.analysis_queries)
    try:
        for name, (rollout, *_) in cases.items():
            runner.follow(name, rollout, 0)
        seen = await outcomes(runner, woken, [c[0] for c in cases.values()])
    finally:
        await runner.close()
    for name, (_, outcome, value, detail) in cases.items():
        got = seen[name]
        assert (got.outcome, got.value) == (outcome, value), (name, got)
        assert detail in got.detail, (name, got)
    counted = {r: registry.get_sample_value("fleetwave_analysis_queries_total", {"result": r})
               for r in ("in_bounds", "out_of_bounds", "unavailable")}
    assert counted["in_bounds"] is not None and counted["in_bounds"] >= 2
    assert counted["out_of_bounds"] is not None and counted["out_of_bounds"] >= 1
    assert counted["unavailable"] is not None and counted["unavailable"] >= 5


async def test_a_change_of_outcome_wakes_once_and_is_one_event(
        prometheus: Prometheus, page: MetricsPage) -> None:
    page.values["app_flip"] = 1.0
    r = analysed("flip", prometheus.url, "app_flip", max=2)
    woken = Woken()
    runner = AnalysisRunner(woken)
    try:
        runner.follow(r.name, r, 0)
        first = (await outcomes(runner, woken, [r]))[r.name]
        assert first.outcome == "in_bounds" and woken.components == ["agent"]
        await asyncio.sleep(2.5)  # two more answers, the same outcome: no wake-up
        same = runner.results({r.name: r})[(r.name, 0)]
        assert (same.outcome, same.since) == ("in_bounds", first.since)
        assert woken.components == ["agent"]
        page.values["app_flip"] = 3.0
        async with asyncio.timeout(15):
            while runner.results({r.name: r})[(r.name, 0)].outcome == "in_bounds":
                await woken.next()
        flipped = runner.results({r.name: r})[(r.name, 0)]
        assert (flipped.outcome, flipped.value) == ("out_of_bounds", 3.0)
        assert flipped.since > first.since and woken.components == ["agent", "agent"]
        events = runner.drain_events()
        assert [(n, e.type, e.reason) for n, e in events] == [
            (r.name, "Normal", "AnalysisInBounds"), (r.name, "Warning", "AnalysisOutOfBounds")]
        assert events[1][1].message == "step 1 analysis: app_flip = 3, outside [-inf, 2]"
    finally:
        page.values["app_flip"] = 1.0
        await runner.close()


async def test_a_step_no_longer_awaited_is_forgotten_and_a_new_version_asks_anew(
        prometheus: Prometheus) -> None:
    r = analysed("forget", prometheus.url, "app_good_ratio")
    woken = Woken()
    runner = AnalysisRunner(woken)
    try:
        runner.follow(r.name, r, 0)
        await outcomes(runner, woken, [r])
        newer = analysed("forget", prometheus.url, "app_good_ratio", version="1.0.7")
        assert runner.results({r.name: newer}) == {}, "an answer for 1.0.6 stood for 1.0.7"
        runner.follow(r.name, r, None)
        assert runner.results({r.name: r}) == {}
    finally:
        await runner.close()


class Hostile:
    """Answers what `answer` says: (status, body, headers)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"{}", {})

    async def handle(self, request: web.Request) -> web.Response:
        status, body, headers = self.answer
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    server = Hostile()
    app = web.Application()
    app.router.add_get("/api/v1/query", server.handle)
    runner, url = await serve(app)
    yield server, url
    await runner.cleanup()


SCALAR = b'{"status":"success","data":{"resultType":"scalar","result":[1,"0.01"]}}'


@pytest.mark.parametrize(("status", "body", "headers", "says"), [
    pytest.param(200, b"x" * (64 * 1024 + 1), {}, "answer too long", id="too-long"),
    pytest.param(200, b"<html>", {}, "not JSON", id="not-json"),
    pytest.param(302, b"", {"Location": "http://127.0.0.1:1/"}, "not JSON", id="redirect"),
    pytest.param(503, SCALAR, {}, "HTTP 503", id="error-status"),
    pytest.param(200, b'{"status":"success","data":{"resultType":"scalar",'
                      b'"result":[1,"NaN"]}}', {}, "NaN", id="nan"),
    pytest.param(200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}',
                 {}, "a matrix result", id="matrix"),
    pytest.param(200, b'[1, 2]', {}, "not a Prometheus API answer", id="a-list"),
])
async def test_a_hostile_answer_is_unavailable(hostile: tuple[Hostile, str], status: int,
                                               body: bytes, headers: dict[str, str],
                                               says: str) -> None:
    server, url = hostile
    server.answer = (status, body, headers)
    r = analysed("hostile", url, "up", max=1)
    woken = Woken()
    runner = AnalysisRunner(woken)
    try:
        runner.follow(r.name, r, 0)
        got = (await outcomes(runner, woken, [r]))[r.name]
    finally:
        await runner.close()
    assert got.outcome == "unavailable" and says in got.detail, got
    server.answer = (200, SCALAR, {})
    woken = Woken()
    runner = AnalysisRunner(woken)
    try:
        runner.follow(r.name, r, 0)
        assert (await outcomes(runner, woken, [r]))[r.name].outcome == "in_bounds"
    finally:
        await runner.close()
