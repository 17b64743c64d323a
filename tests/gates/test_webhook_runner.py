"""GateRunner against a real HTTP server the test runs (aiohttp on 127.0.0.1): signed
requests, closed then open, back-off between questions, an answer per event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleetwave.runtime.gates import GateRunner
from tests.gates.gate_server import GateServer, serving
from tests.planner.fleet import make_rollout

SECRET = "s3cret"


@pytest.fixture
async def server() -> AsyncIterator[GateServer]:
    async with serving(GateServer(SECRET)) as gate:
        yield gate


async def answered(runner: GateRunner, woke: asyncio.Event) -> None:
    await asyncio.wait_for(woke.wait(), 10)
    woke.clear()


async def test_closed_then_open_with_signed_requests_and_back_off(server: GateServer) -> None:
    r = make_rollout(strategy={"steps": [{"percent": 10}, {
        "percent": 100, "gate": {"webhook": {"url": server.url, "secretRef": "GATE_KEY"}}}]})
    woke = asyncio.Event()
    gates = GateRunner(woke.set, first_backoff=5.0, env={"GATE_KEY": SECRET})
    counts = {"succeeded": 10}
    gates.ask(r, 1, counts, now=1000.0)
    await answered(gates, woke)
    assert gates.results({r.name: r}) == {(r.name, 1): False}
    [request] = server.requests
    assert request.body == {"rollout": r.name, "step": 2, "version": "1.0.6",
                            "counts": counts}
    assert request.signed
    gates.ask(r, 1, counts, now=1004.0)  # within the back-off: not asked again
    await asyncio.sleep(0.2)
    assert len(server.requests) == 1
    server.answer = (200, {"allow": True})
    gates.ask(r, 1, counts, now=1005.0)
    await answered(gates, woke)
    assert gates.results({r.name: r}) == {(r.name, 1): True}
    gates.ask(r, 1, counts, now=1100.0)  # open stands: never asked again
    await asyncio.sleep(0.2)
    assert len(server.requests) == 2
    events = gates.drain_events()
    assert [(n, e.reason) for n, e in events] == [(r.name, "GateClosed"), (r.name, "GateOpened")]
    # A new version asks anew.
    r2 = make_rollout(version="1.0.7", strategy=r.raw_spec["strategy"])
    assert gates.results({r2.name: r2}) == {}


@pytest.mark.parametrize("answer", [
    pytest.param((500, {"allow": True}), id="server-error"),
    pytest.param((200, {"allow": "yes"}), id="not-true"),
    pytest.param((200, ["allow"]), id="not-an-object"),
    pytest.param((302, {}), id="redirect-not-followed"),
])
async def test_anything_but_allow_true_in_a_2xx_is_closed(server: GateServer,
                                                          answer: tuple[int, Any]) -> None:
    r = make_rollout(strategy={"steps": [{"percent": 100, "gate": {"webhook": {
        "url": server.url}}}]})
    woke = asyncio.Event()
    gates = GateRunner(woke.set, env={})
    server.answer = answer
    gates.ask(r, 0, {}, now=0.0)
    await answered(gates, woke)
    assert gates.results({r.name: r}) == {(r.name, 0): False}
    assert server.requests[0].signed is False  # no secretRef: unsigned


async def test_an_unreachable_gate_is_closed_and_backs_off_doubling() -> None:
    r = make_rollout(strategy={"steps": [{"percent": 100, "gate": {"webhook": {
        "url": "http://127.0.0.1:9/gate"}}}]})
    woke = asyncio.Event()
    gates = GateRunner(woke.set, first_backoff=5.0, max_backoff=12.0, env={})
    waits = []
    now = 0.0
    for _ in range(3):
        gates.ask(r, 0, {}, now=now)
        await answered(gates, woke)
        [(_, event)] = gates.drain_events()
        assert event.reason == "GateClosed" and "unreachable" in event.message
        waits.append(float(event.message.rsplit("in ", 1)[1].rstrip("s")))
        now += waits[-1]
    assert waits == [5.0, 10.0, 12.0]
