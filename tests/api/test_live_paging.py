"""The engine's pages and its bounded version labels, on a real `fleetwave run`.

A real Mosquitto and controller; the fleet is 1,200 retained state messages that the
test publishes itself as the simulator account, each device reporting a version no
Rollout declares, so both the pages (more than one at the maximum size) and the
`fleetwave_devices` series can be checked against what was sent.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.metrics.scrape import scrape
from tests.support.broker import RunningBroker
from tests.support.processes import Controller, wait_until

pytestmark = pytest.mark.slow

DEVICES = 1_200
ROLLOUT_YAML = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: agent-1-0-6}
spec:
  component: agent
  version: "1.0.6"
  selector: {matchLabels: {ring: nobody}}
  strategy: {steps: [{percent: 100}]}
"""


def publish_fleet(broker: RunningBroker, states: dict[str, dict[str, Any]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-fleet")
    client.username_pw_set(*broker.simulator)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(f"iot/device/{uuid}/agent/state", json.dumps(state), qos=1,
                                retain=True) for uuid, state in states.items()]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def get(controller: Controller, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(controller.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_pages_and_version_labels_on_a_real_controller(
        tmp_path: Path, broker: RunningBroker,
        controller_factory: Callable[..., Controller]) -> None:
    rng = random.Random(13)
    states = {f"dev-{i:05d}": {"uuid": f"dev-{i:05d}", "labels": {"ring": "all"},
                               "versions": {"agent": f"9.{rng.randrange(10**9)}.{i}",
                                            "nodered": "3.1.0"}}
              for i in range(DEVICES)}
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(ROLLOUT_YAML)
    (tmp_path / "readers").write_text("reader-token\n")
    controller = controller_factory(source,
                                    extra_args=("--read-token-file", str(tmp_path / "readers")))
    controller.start()
    publish_fleet(broker, states)

    def all_known() -> list[dict[str, Any]] | None:
        status, body = get(controller, "/api/v1/devices?limit=1", "reader-token")
        return body if status == 200 and body.get("total") == DEVICES else None

    wait_until(all_known, 60, lambda: f"devices not all known\n{controller.tail()}")

    # Reads need a token now; the CLI's and the tests' token (a write token) reads too.
    assert get(controller, "/api/v1/devices")[0] == 401
    seen: list[str] = []
    query = "?limit=1000"
    while True:
        status, body = get(controller, "/api/v1/devices" + query, controller.token)
        assert status == 200, body
        assert len(body["items"]) <= 1000 and body["total"] == DEVICES
        seen += [d["uuid"] for d in body["items"]]
        if body["next"] is None:
            break
        query = f"?limit=1000&cursor={body['next']}"
    assert seen == sorted(states)

    # 1,200 distinct versions nobody declared: one `other` series, not 1,200; a component
    # no Rollout names is `other` too.
    def settled() -> dict[tuple[str, str], float] | None:
        page = scrape(controller.url)
        series = {(s.labels["component"], s.labels["version"]): float(s.value)
                  for s in page.samples if s.name == "fleetwave_devices"}
        return series if sum(series.values()) == 2 * DEVICES else None

    series = wait_until(settled, 30, lambda: f"/metrics never counted the fleet\n"
                                             f"{controller.tail()}")
    assert series == {("agent", "other"): DEVICES, ("other", "other"): DEVICES}
