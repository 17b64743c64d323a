"""The real `fleetwave` console script against a real `fleetwave run` and simulated fleet.

tests/cli/test_control.py covers output formats against an in-memory stand-in; here
every command talks to the controller users run, over real MQTT devices, so what a
script sees (exit codes, one JSON document, the documented messages) is what it gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.mqtt.broker import free_port
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

FLEETWAVE = str(Path(sys.executable).with_name("fleetwave"))
DEVICES = 100
ROLLOUT = "agent-rollout"
REFUSED = ("error: the server refused the token: set FLEETWAVE_TOKEN to a token from the "
           "server's --token-file (or --read-token-file for reads)")


def rollout_yaml(steps: str, max_in_flight: int = 300) -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {ROLLOUT}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy: {{steps: {steps}, maxInFlight: {max_in_flight}}}
  health: {{ackTimeout: 30s, updateTimeout: 60s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 50, retries: 0}}
"""


def fleetwave(server: str, *args: str, token: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWAVE_")}
    environ["FLEETWAVE_SERVER"] = server
    if token is not None:
        environ["FLEETWAVE_TOKEN"] = token
    return subprocess.run([FLEETWAVE, *args], capture_output=True, text=True, env=environ,
                          timeout=timeout, check=False)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # the whole of stdout is one document


def start(tmp_path: Path, controller_factory: Callable[..., Controller],
          simulator_factory: Callable[..., Simulator], steps: str, *sim_args: str,
          max_in_flight: int = 300) -> Controller:
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(rollout_yaml(steps, max_in_flight))
    simulator_factory(DEVICES, "--seed", "11", *sim_args)
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 30,
               lambda: f"devices not all known: {len(controller.devices())}")
    return controller


def phase(controller: Controller) -> dict[str, Any]:
    status: dict[str, Any] = as_json(fleetwave(controller.url, "status", ROLLOUT, "-o",
                                               "json"))["status"]
    return status


def test_read_commands_follow_a_rollout_to_completion(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller = start(tmp_path, controller_factory, simulator_factory,
                       "[{percent: 10}, {percent: 50}, {percent: 100}]", "--speed", "20")

    watched = fleetwave(controller.url, "status", "--watch", "--timeout", "90s")
    assert watched.returncode == 0, watched.stderr + watched.stdout
    assert "Completed" in watched.stdout.splitlines()[-1] or "Completed" in watched.stdout
    assert watched.stdout.splitlines()[0].split()[:4] == ["NAME", "COMPONENT", "VERSION",
                                                          "PHASE"]

    listed = as_json(fleetwave(controller.url, "status", "-o", "json"))
    [rollout] = listed["items"]
    assert rollout["name"] == ROLLOUT
    assert rollout["status"]["phase"] == "Completed"
    assert rollout["status"]["targeted"] == DEVICES
    assert rollout["status"]["counts"]["succeeded"] == DEVICES

    devices = as_json(fleetwave(controller.url, "devices", "-o", "json"))["items"]
    assert len(devices) == DEVICES
    wait_until(lambda: {d["versions"]["agent"] for d in controller.devices()} == {"1.0.6"}, 10,
               "devices do not all report 1.0.6")
    uuid = devices[0]["uuid"]

    history = as_json(fleetwave(controller.url, "history", uuid, "-o", "json"))["items"]
    assert [(h["device"], h["rollout"], h["toVersion"], h["state"]) for h in history] == [
        (uuid, ROLLOUT, "1.0.6", "succeeded")]
    table = fleetwave(controller.url, "history", uuid)
    assert table.returncode == 0 and "succeeded" in table.stdout, table.stderr

    unknown = fleetwave(controller.url, "history", "no-such-device")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert "no device no-such-device" in unknown.stderr


def test_control_commands_change_what_status_shows(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    # Slow devices (about 4 s an update) and a small in-flight cap leave time between steps.
    controller = start(tmp_path, controller_factory, simulator_factory,
                       "[{percent: 10, pause: 1h}, {percent: 100}]", "--speed", "2",
                       max_in_flight=5)
    token = controller.token
    wait_until(lambda: phase(controller)["counts"]["succeeded"] == 10
               and phase(controller)["currentStep"] == 0, 60,
               lambda: f"first wave not done: {phase(controller)}")

    promoted = fleetwave(controller.url, "promote", ROLLOUT, token=token)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith(f"rollout {ROLLOUT} promoted")
    wait_until(lambda: phase(controller)["currentStep"] == 1, 10,
               lambda: f"promote did not start the next wave: {phase(controller)}")

    paused = as_json(fleetwave(controller.url, "pause", ROLLOUT, "-o", "json", token=token))
    assert paused["status"]["phase"] == "Paused"
    assert phase(controller)["phase"] == "Paused"

    resumed = fleetwave(controller.url, "resume", ROLLOUT, token=token)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: phase(controller)["phase"] == "Progressing", 10,
               lambda: f"not progressing after resume: {phase(controller)}")

    aborted = fleetwave(controller.url, "abort", ROLLOUT, token=token)
    assert aborted.returncode == 0, aborted.stderr
    assert phase(controller)["phase"] == "Aborted"
    watched = fleetwave(controller.url, "status", ROLLOUT, "--watch", "--timeout", "10s")
    assert watched.returncode == 1  # --watch ends at once on an aborted rollout, with 1
    assert "did not complete" in watched.stderr and "Aborted" in watched.stderr


@pytest.mark.parametrize("token", [pytest.param("not-the-token", id="wrong"),
                                   pytest.param(None, id="missing")])
def test_a_refused_token_exits_1_with_advice_and_changes_nothing(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator], token: str | None) -> None:
    controller = start(tmp_path, controller_factory, simulator_factory,
                       "[{percent: 10, pause: 1h}, {percent: 100}]", "--speed", "20")
    # The hour-long pause after the first wave: nothing moves by itself from here on.
    wait_until(lambda: phase(controller)["phase"] == "Paused", 30,
               lambda: f"first wave not done: {phase(controller)}")
    before = phase(controller)
    for op in ("pause", "resume", "promote", "abort"):
        result = fleetwave(controller.url, op, ROLLOUT, token=token)
        assert result.returncode == 1, (op, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.strip() == REFUSED
    after = phase(controller)
    assert (after["phase"], after["currentStep"]) == (before["phase"], before["currentStep"])


@pytest.mark.parametrize("args", [
    pytest.param(["status"], id="status"),
    pytest.param(["status", "-o", "json"], id="status-json"),
    pytest.param(["devices", "-o", "json"], id="devices"),
    pytest.param(["history", "some-device"], id="history"),
    pytest.param(["pause", ROLLOUT], id="pause"),
])
def test_a_closed_port_exits_1_and_says_what_to_do(args: list[str]) -> None:
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = fleetwave(server, *args, token="any")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: cannot reach fleetwave at {server}: is `fleetwave run` running? "
        "set --server or FLEETWAVE_SERVER")
