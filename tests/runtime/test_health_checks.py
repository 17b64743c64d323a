"""HTTP and TCP health checks against real local servers, and their effect on a rollout."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from fleetwave.mqtt.broker import free_port
from fleetwave.resources.model import Check
from fleetwave.runtime.checks import AddressPolicy, CheckRunner, CheckTarget
from tests.support.processes import Controller, Simulator, wait_until

BAD = "bad"
LOOPBACK = AddressPolicy.of(["127.0.0.0/8"])
"""These servers listen on loopback, which checks refuse unless allowed."""


@pytest.fixture
def health_server() -> Iterator[int]:
    """`GET /health/<uuid>`: 200 "ok" except for uuids starting with `bad`, which get 500."""

    async def health(request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        if uuid.startswith(BAD):
            return web.Response(status=500, text="broken")
        return web.Response(text="status: ok")

    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/health/{uuid}", health)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        runner_box.append(runner)
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def http_check(port: int, **extra: object) -> Check:
    return Check(type="http", url=f"http://127.0.0.1:{port}/health/{{device_uuid}}",
                 timeout=timedelta(seconds=2), **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(("device", "check", "passed", "why"), [
    pytest.param("good-1", {}, True, "ok", id="http-200"),
    pytest.param("bad-1", {}, False, "status 500", id="http-500"),
    pytest.param("good-2", {"body_contains": "status: ok"}, True, "ok", id="body-matches"),
    pytest.param("good-3", {"body_contains": "healthy"}, False, "body lacks", id="body-differs"),
    pytest.param("bad-2", {"expect_status": 500}, True, "ok", id="expected-500"),
])
def test_http_check_verdicts(health_server: int, device: str, check: dict[str, object],
                             passed: bool, why: str) -> None:
    runner = CheckRunner(policy=LOOPBACK)
    target = CheckTarget("r", device, "127.0.0.1", None, (http_check(health_server, **check),))
    results = asyncio.run(runner.run([target]))
    verdict = results[("r", device)]
    assert verdict[0] is passed
    assert why in verdict[1]


def test_tcp_check_passes_on_an_open_port_and_fails_on_a_closed_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        closed_port = free_port()
        runner = CheckRunner(policy=LOOPBACK)
        targets = [
            CheckTarget("r", "open", "127.0.0.1", None,
                        (Check(type="tcp", port=open_port, timeout=timedelta(seconds=2)),)),
            CheckTarget("r", "closed", "127.0.0.1", None,
                        (Check(type="tcp", port=closed_port, timeout=timedelta(seconds=2)),)),
        ]
        results = asyncio.run(runner.run(targets))
    assert results[("r", "open")][0] is True
    assert results[("r", "closed")][0] is False


def test_an_unreachable_url_is_a_failed_check_not_an_error() -> None:
    runner = CheckRunner(policy=LOOPBACK)
    check = Check(type="http", url=f"http://127.0.0.1:{free_port()}/x",
                  timeout=timedelta(seconds=1))
    results = asyncio.run(runner.run([CheckTarget("r", "d", None, None, (check,))]))
    assert results[("r", "d")][0] is False


@pytest.mark.slow
def test_devices_failing_their_http_check_count_as_unhealthy(
        tmp_path: Path, health_server: int, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """A real controller checks each updated device over HTTP; the devices whose check
    fails are unhealthy in the rollout's counts, the others healthy."""
    good = [f"good-{i:02d}" for i in range(8)]
    bad = [f"{BAD}-{i:02d}" for i in range(2)]
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: checked}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy: {{steps: [{{percent: 100}}]}}
  health:
    stableFor: 1s
    checks:
      - {{type: http, url: "http://127.0.0.1:{health_server}/health/{{device_uuid}}",
          timeout: 2s}}
  failurePolicy: {{maxFailurePercent: 50, minSample: 5, retries: 0,
                  rollbackFailedDevices: false}}
""")
    args = ["--speed", "40"]
    for device in good + bad:
        args += ["--device-id", device]
    simulator_factory(len(good) + len(bad), *args)
    controller = controller_factory(source, extra_args=("--health-check-allow", "127.0.0.0/8"))
    controller.start()

    def settled() -> dict[str, int] | None:
        status = controller.get("/api/v1/rollouts/checked").get("status", {})
        counts: dict[str, int] = status.get("counts", {})
        return counts if counts.get("unhealthy") == len(bad) and status.get(
            "phase") == "Completed" else None

    counts = wait_until(settled, 60, lambda: f"{controller.get('/api/v1/rollouts/checked')}")
    assert counts["unhealthy"] == len(bad)
    devices = {d["uuid"]: d for d in controller.get("/api/v1/rollouts/checked/devices")["items"]}
    assert {u for u, d in devices.items() if d["health"] == "unhealthy"} == set(bad)
    assert all(devices[u]["health"] == "healthy" for u in good)
