"""End to end: simulated devices on a real Mosquitto report hostile `ip`s to a real
`fleetwave run`; the controller's health checks never reach loopback unless allowed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fleetwave.runtime.keys import load_key_file
from fleetwave.simulator.fleet import SimulatedFleet, SimulatorConfig
from tests.metrics.scrape import scrape
from tests.runtime.checkservers import Sentinel
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, signing_keys, wait_until

pytestmark = pytest.mark.slow

ROLLOUT = """\
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
      - {{type: http, url: "http://{{device_ip}}:{port}/health", timeout: 2s}}
  failurePolicy: {{maxFailurePercent: 100, minSample: 100, retries: 0,
                  rollbackFailedDevices: false}}
"""


@contextlib.contextmanager
def devices_reporting(broker: RunningBroker, controller: Controller,
                      ips: Mapping[str, str]) -> Iterator[None]:
    """The simulator's devices, in this process, each reporting the `ip` given for it and
    trusting the controller's key."""
    key = load_key_file(signing_keys(controller.key_dir or controller.workdir)[0]).public
    config = SimulatorConfig(broker=broker.url, username=broker.simulator[0],
                             password=broker.simulator[1], device_ids=list(ips), speed=40,
                             trust_keys=(key.base64,))
    fleet = SimulatedFleet(config)
    for device, ip in ips.items():
        fleet.devices[device].profile.ip = ip
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        async with fleet:
            async with asyncio.timeout(20):
                await fleet.wait_ready()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "simulated devices did not connect"
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def settled(controller: Controller, devices: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        rows = (controller.get("/api/v1/rollouts/checked/devices", ok_only=False) or {}).get(
            "items", [])
        judged = {r["uuid"]: r for r in rows if r.get("health") in ("healthy", "unhealthy")}
        return judged if len(judged) == devices else None
    return check


def refusal_logs(controller: Controller) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in controller.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "health_check.refused":
                out.setdefault(entry["device"], set()).add(entry["reason"])
    return out


HOSTILE = {"metadata": "169.254.169.254", "loopback": "127.0.0.1",
           "injected": "10.0.0.1:6443/api", "named-loopback": "localhost"}


def start(tmp_path: Path, sentinel: Sentinel, controller_factory: Callable[..., Controller],
          *extra: str) -> Controller:
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "checked.yaml").write_text(ROLLOUT.format(port=sentinel.port))
    controller = controller_factory(source, extra_args=extra)
    controller.start()
    return controller


def test_hostile_device_addresses_get_no_connection(
        tmp_path: Path, broker: RunningBroker, sentinel: Sentinel,
        controller_factory: Callable[..., Controller]) -> None:
    ips = {**HOSTILE, "injected-loopback": f"127.0.0.1:{sentinel.port}/health#"}
    controller = start(tmp_path, sentinel, controller_factory)
    with devices_reporting(broker, controller, ips):
        judged = wait_until(settled(controller, len(ips)), 60,
                            lambda: f"{controller.rollout('checked')}\n{controller.tail()}")
        assert {u for u, r in judged.items() if r["health"] == "unhealthy"} == set(ips)
        assert sentinel.accepted == 0
        logs = wait_until(lambda: (found := refusal_logs(controller)) and set(found) == set(ips)
                          and found, 10, lambda: f"{refusal_logs(controller)}")
        assert logs == {"metadata": {"link_local"}, "loopback": {"loopback"},
                        "named-loopback": {"loopback"}, "injected": {"not_an_address"},
                        "injected-loopback": {"not_an_address"}}
        refused = scrape(controller.url).values("fleetwave_health_checks_refused_total",
                                                by="reason")
        assert refused["link_local"] >= 1
        assert refused["loopback"] >= 2
        assert refused["not_an_address"] >= 2
    assert sentinel.accepted == 0


def test_allowed_loopback_is_checked_and_the_metadata_address_still_refused(
        tmp_path: Path, broker: RunningBroker, sentinel: Sentinel,
        controller_factory: Callable[..., Controller]) -> None:
    """Proves the test above can fail: the same devices, the range allowed, the sentinel is
    reached and loopback devices are healthy; the allow flag opens nothing else."""
    controller = start(tmp_path, sentinel, controller_factory,  # localhost may be ::1 too
                       "--health-check-allow", "127.0.0.0/8", "--health-check-allow", "::1")
    with devices_reporting(broker, controller, HOSTILE):
        judged = wait_until(settled(controller, len(HOSTILE)), 60,
                            lambda: f"{controller.rollout('checked')}\n{controller.tail()}")
    health = {u: r["health"] for u, r in judged.items()}
    assert health == {"loopback": "healthy", "named-loopback": "healthy",
                      "metadata": "unhealthy", "injected": "unhealthy"}
    assert sentinel.accepted >= 2
    assert set(refusal_logs(controller)) == {"metadata", "injected"}
