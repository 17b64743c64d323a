"""`fleetwave run` with a real Prometheus scraping a page the test controls, a real
Mosquitto and `fleetwave simulate`: a good value passes each analysed step after `for`
and the rollout completes; a bad one pauses it with reason AnalysisFailed; a stopped
Prometheus keeps the step from finishing until it answers again.

One controller and one simulator serve the three (starting them is most of the cost):
three rollouts of the same component over three disjoint sets of ten devices.
"""

from __future__ import annotations

import collections
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetwave.mqtt.broker import free_port
from tests.analysis.prometheus import MetricsPage, Prometheus, settle
from tests.support.broker import start_broker
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

GROUP = 10
NAMES = ("good", "bad", "down")


def rollout_yaml(name: str, devices: list[str], url: str, query: str, hold: str) -> str:
    analysis = f"{{prometheus: {{url: '{url}', query: '{query}', max: 0.05, for: {hold}}}}}"
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{devices: [{", ".join(devices)}]}}
  strategy:
    steps:
      - {{percent: 50, analysis: {analysis}}}
      - {{percent: 100, analysis: {analysis}}}
    maxInFlight: 50
  health: {{ackTimeout: 15s, updateTimeout: 30s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 10, minSample: 5, retries: 0, action: pause}}
"""


@dataclass
class World:
    controller: Controller
    down: Prometheus
    """The third rollout's Prometheus: up once (it had data), stopped before the rollout."""
    groups: dict[str, list[str]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prometheus: Prometheus,
          page: MetricsPage) -> Iterator[World]:
    root = tmp_path_factory.mktemp("analysis-e2e")
    broker = start_broker(root / "mosquitto")
    down = Prometheus(root / "down", f"127.0.0.1:{page.port}")
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(GROUP * len(NAMES))]
    groups = {name: ids[i * GROUP:(i + 1) * GROUP] for i, name in enumerate(NAMES)}
    source = root / "rollouts"
    source.mkdir()
    simulator = Simulator(broker=broker, workdir=root, devices=len(ids), key_dir=root,
                          args=["--speed", "40", "--seed", "7",
                                *[a for d in ids for a in ("--device-id", d)]])
    (root / "controller").mkdir()
    controller = Controller(workdir=root / "controller", broker=broker, port=free_port(),
                            source=source, store=f"sqlite:///{root / 'fleetwave.db'}",
                            key_dir=root)
    try:
        down.start()
        down.wait_for_sample("app_good_ratio")
        down.stop()
        for name, url, query, hold in (("good", prometheus.url, "app_good_ratio", "3s"),
                                       ("bad", prometheus.url, "app_bad_ratio", "2s"),
                                       ("down", down.url, "app_good_ratio", "1s")):
            (source / f"{name}.yaml").write_text(
                rollout_yaml(name, groups[name], url, query, hold))
        simulator.start()
        controller.start()
        yield World(controller, down, groups)
    finally:
        controller.stop()
        simulator.stop()
        down.stop()
        broker.stop()


def status(controller: Controller, name: str) -> dict[str, Any]:
    rollout = controller.get(f"/api/v1/rollouts/{name}", ok_only=False)
    found: dict[str, Any] = (rollout["status"] if isinstance(rollout, dict)
                             and "name" in rollout else {})
    return found


def reached(world: World, name: str, phase: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: (s := status(world.controller, name)).get("phase") == phase and s, 60,
        lambda: f"{name} not {phase}: {status(world.controller, name)}\n"
                f"{world.controller.tail()}")
    return found


def condition(found: dict[str, Any], kind: str) -> tuple[str, str]:
    c = {c["type"]: c for c in found.get("conditions", [])}.get(kind, {})
    return c.get("status", ""), c.get("reason", "")


def events(controller: Controller, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = controller.get(
        f"/api/v1/rollouts/{name}/events?limit=1000")["items"]
    return items


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def updated(world: World, name: str) -> collections.Counter[str | None]:
    mine = set(world.groups[name])
    return collections.Counter(d["versions"].get("agent") for d in world.controller.devices()
                               if d["uuid"] in mine)


def test_a_good_value_passes_each_step_after_for(world: World) -> None:
    reached(world, "good", "Completed")
    seen = events(world.controller, "good")
    finished = [at(e) for e in seen if e["reason"] == "StepFinished"]
    started = [at(e) for e in seen if e["reason"] == "StepStarted"]
    assert len(finished) == 2 and len(started) == 2, [e["reason"] for e in seen]
    assert started[1] - finished[0] >= 3, "step 2 started before 3s in bounds after step 1"
    ours = [e for e in seen if e["actor"] == "analysis"]
    assert ours and {e["reason"] for e in ours} == {"AnalysisInBounds"}, ours
    assert "app_good_ratio = 0.01, inside [-inf, 0.05]" in ours[0]["message"]
    assert updated(world, "good") == {"1.0.6": GROUP}
    with urllib.request.urlopen(world.controller.url + "/metrics", timeout=5) as response:
        queried = {s.labels["result"]: s.value
                   for f in text_string_to_metric_families(response.read().decode())
                   if f.name == "fleetwave_analysis_queries" for s in f.samples
                   if s.name.endswith("_total")}
    assert queried["in_bounds"] >= 2 and queried["out_of_bounds"] >= 1, queried


def test_a_bad_value_pauses_the_rollout_in_its_first_step(world: World) -> None:
    found = reached(world, "bad", "Paused")
    assert condition(found, "Paused") == ("True", "AnalysisFailed")
    assert found["currentStep"] == 0
    settle(2)
    later = status(world.controller, "bad")
    assert (later["phase"], later["currentStep"]) == ("Paused", 0)
    assert updated(world, "bad")["1.0.6"] <= GROUP // 2, "updated past the analysed 50 %"
    reasons = [(e["reason"], e["actor"]) for e in events(world.controller, "bad")]
    assert ("AnalysisOutOfBounds", "analysis") in reasons
    assert any(r == "AnalysisFailed" for r, _ in reasons), reasons


def test_a_stopped_prometheus_keeps_the_step_from_finishing_until_it_answers(
        world: World) -> None:
    found = reached(world, "down", "Waiting")
    assert condition(found, "Waiting") == ("True", "AnalysisUnavailable")
    assert "unreachable" in found["message"]
    settle(3)
    held = status(world.controller, "down")
    assert (held["phase"], held["currentStep"]) == ("Waiting", 0), held
    assert updated(world, "down")["1.0.6"] <= GROUP // 2
    world.down.start()  # same port and storage: it answers again, the rollout goes on
    reached(world, "down", "Completed")
    assert updated(world, "down") == {"1.0.6": GROUP}
