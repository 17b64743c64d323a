"""The HTTP API served by a real `fleetwave run`, with a simulated fleet behind it.

tests/api/test_endpoints.py pins each endpoint against an in-memory stand-in; here
the engine itself answers (runtime/engine.py implements ControlPlane), so the
documented fields (DESIGN.md section 8) are checked on what the real process returns,
ad-hoc updates and cancels reach real devices, and schemathesis fuzzes the live process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
DEVICES = 50
ROLLOUT = "agent-rollout"
ROLLOUT_YAML = f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {ROLLOUT}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy: {{steps: [{{percent: 20}}, {{percent: 100}}], maxInFlight: 100}}
  health: {{ackTimeout: 30s, updateTimeout: 60s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 50, retries: 0}}
"""
STATUS_FIELDS = {"phase", "currentStep", "observedGeneration", "revision", "targeted", "counts",
                 "failureRate", "conditions"}
COUNT_KEYS = {"pending", "acknowledged", "scheduled", "in_progress", "succeeded", "failed",
              "timeout", "cancelled", "rolled_back", "unhealthy", "unreachable", "conflicted"}
CONDITION_FIELDS = {"type", "status", "reason", "message", "lastTransitionTime",
                    "observedGeneration"}
RECORD_FIELDS = {"id", "device", "rollout", "component", "fromVersion", "toVersion", "state",
                 "attempt", "correlationId", "reason", "error", "exitCode", "triggeredBy",
                 "createdAt", "acknowledgedAt", "startedAt", "completedAt"}
DEVICE_FIELDS = {"uuid", "versions", "labels", "online", "lastSeen", "ip"}


def call(controller: Controller, method: str, path: str, body: Any = None,
         token: str | None = "") -> tuple[int, Any]:
    """(status, decoded JSON) for any answer; `token=""` means the controller's own."""
    headers = {"Content-Type": "application/json"}
    bearer = controller.token if token == "" else token
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(controller.url + path, data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def ok(controller: Controller, method: str, path: str, body: Any = None) -> Any:
    status, payload = call(controller, method, path, body)
    assert 200 <= status < 300, (method, path, status, payload)
    return payload


def start(tmp_path: Path, controller_factory: Callable[..., Controller],
          simulator_factory: Callable[..., Simulator], *sim_args: str,
          rollout: str | None = ROLLOUT_YAML) -> Controller:
    source = tmp_path / "rollouts"
    source.mkdir()
    if rollout is not None:
        (source / "agent.yaml").write_text(rollout)
    simulator_factory(DEVICES, "--seed", "5", *sim_args)
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 30,
               lambda: f"devices not all known: {len(controller.devices())}")
    return controller


def completed(controller: Controller, name: str = ROLLOUT) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status, rollout = call(controller, "GET", f"/api/v1/rollouts/{name}")
        done = status == 200 and rollout["status"].get("phase") == "Completed"
        return rollout if done else None
    result: dict[str, Any] = wait_until(check, 60, lambda: f"{name} not completed: "
                                        f"{call(controller, 'GET', f'/api/v1/rollouts/{name}')}")
    return result


def test_read_endpoints_return_the_documented_fields(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller = start(tmp_path, controller_factory, simulator_factory, "--speed", "40")
    rollout = completed(controller)

    assert {"name", "spec", "status", "source"} <= set(rollout)
    assert rollout["spec"]["version"] == "1.0.6"
    assert set(rollout["source"]) == {"kind", "revision", "path"}
    assert rollout["source"]["kind"] == "folder" and rollout["source"]["path"] == "agent.yaml"
    status = rollout["status"]
    assert set(status) >= STATUS_FIELDS, STATUS_FIELDS - set(status)
    assert set(status["counts"]) >= COUNT_KEYS, COUNT_KEYS - set(status["counts"])
    assert status["revision"] == rollout["source"]["revision"]
    assert (status["observedGeneration"], status["targeted"]) == (1, DEVICES)
    assert status["counts"]["succeeded"] == DEVICES and status["failureRate"] == 0
    assert status["conditions"] and all(set(c) >= CONDITION_FIELDS
                                        for c in status["conditions"])

    assert [r["name"] for r in ok(controller, "GET", "/api/v1/rollouts")["items"]] == [ROLLOUT]
    assert len(ok(controller, "GET", "/api/v1/rollouts?phase=Completed")["items"]) == 1
    assert ok(controller, "GET", "/api/v1/rollouts?phase=Paused")["items"] == []

    per_device = ok(controller, "GET", f"/api/v1/rollouts/{ROLLOUT}/devices")["items"]
    assert len(per_device) == DEVICES
    assert {d["state"] for d in per_device} == {"succeeded"}
    uuid = per_device[0]["uuid"]

    first = ok(controller, "GET", f"/api/v1/rollouts/{ROLLOUT}/events?limit=2")
    assert len(first["items"]) == 2 and first["total"] > 2
    everything = ok(controller, "GET", f"/api/v1/rollouts/{ROLLOUT}/events?limit=1000")
    assert everything["items"][:2] == first["items"]
    times = [e["time"] for e in everything["items"]]
    assert times == sorted(times)  # oldest first
    # Past the end, even past what SQL can count (schemathesis found a 500 there).
    beyond = ok(controller, "GET", f"/api/v1/rollouts/{ROLLOUT}/events?offset={2**90}")
    assert (beyond["items"], beyond["total"]) == ([], everything["total"])

    device = ok(controller, "GET", f"/api/v1/devices/{uuid}")
    assert set(device) >= DEVICE_FIELDS and device["versions"]["agent"] == "1.0.6"
    assert len(ok(controller, "GET", "/api/v1/devices")["items"]) == DEVICES

    [record] = ok(controller, "GET", f"/api/v1/devices/{uuid}/updates")["items"]
    assert set(record) >= RECORD_FIELDS, RECORD_FIELDS - set(record)
    assert (record["device"], record["rollout"], record["fromVersion"], record["toVersion"],
            record["state"], record["attempt"]) == (uuid, ROLLOUT, "1.0.5", "1.0.6",
                                                    "succeeded", 1)
    assert record["createdAt"] <= record["startedAt"] <= record["completedAt"]

    # Nothing is open, so nothing is pending or stale.
    assert ok(controller, "GET", "/api/v1/updates")["items"] == []
    assert ok(controller, "GET", "/api/v1/updates?state=pending&olderThan=30m")["items"] == []
    assert call(controller, "GET", "/api/v1/updates?olderThan=soon")[0] == 400

    for path in ("/api/v1/rollouts/nope", "/api/v1/devices/nope",
                 "/api/v1/devices/nope/updates"):
        code, error = call(controller, "GET", path)
        assert code == 404 and set(error["error"]) == {"code", "message"}, (path, error)
    assert call(controller, "GET", "/healthz")[0] == 200
    assert call(controller, "GET", "/readyz")[0] == 200


def test_an_ad_hoc_update_is_a_one_device_rollout_that_can_be_deleted(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller = start(tmp_path, controller_factory, simulator_factory, "--speed", "40",
                       rollout=None)
    uuid = controller.devices()[0]["uuid"]
    body = {"component": "agent", "version": "1.0.9"}

    assert call(controller, "POST", f"/api/v1/devices/{uuid}/update", body, token=None)[0] == 401
    assert call(controller, "POST", f"/api/v1/devices/{uuid}/update", body,
                token="wrong")[0] == 403
    assert call(controller, "POST", f"/api/v1/devices/{uuid}/update",
                {"component": "agent"})[0] == 400

    created = ok(controller, "POST", f"/api/v1/devices/{uuid}/update", body)
    name = created["name"]
    assert created["source"]["kind"] == "api"
    assert created["spec"]["selector"] == {"devices": [uuid]}
    # Completed only after the default health.stableFor (5m); succeeded is what matters here.
    def succeeded() -> bool:
        status = ok(controller, "GET", f"/api/v1/rollouts/{name}")["status"]
        return bool(status["targeted"] == 1 and status["counts"]["succeeded"] == 1)

    wait_until(succeeded, 20,
               lambda: f"{name}: {ok(controller, 'GET', f'/api/v1/rollouts/{name}')}")
    wait_until(lambda: ok(controller, "GET", f"/api/v1/devices/{uuid}")["versions"]["agent"]
               == "1.0.9", 20, "the device never reported 1.0.9")
    others = {d["versions"]["agent"] for d in controller.devices() if d["uuid"] != uuid}
    assert others == {"1.0.5"}
    newest = ok(controller, "GET", f"/api/v1/devices/{uuid}/updates")["items"][0]
    assert (newest["rollout"], newest["toVersion"], newest["state"]) == (name, "1.0.9",
                                                                        "succeeded")

    assert call(controller, "DELETE", f"/api/v1/rollouts/{name}", token="wrong")[0] == 403
    assert call(controller, "DELETE", f"/api/v1/rollouts/{name}")[0] in (200, 204)
    assert call(controller, "GET", f"/api/v1/rollouts/{name}")[0] == 404
    assert ok(controller, "GET", "/api/v1/rollouts")["items"] == []


def test_an_open_update_is_listed_and_can_be_cancelled(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    # Every simulated update hangs half way: it stays open until cancelled.
    controller = start(tmp_path, controller_factory, simulator_factory, "--speed", "40",
                       "--hang-rate", "1", rollout=None)
    uuid = controller.devices()[0]["uuid"]
    ok(controller, "POST", f"/api/v1/devices/{uuid}/update",
       {"component": "agent", "version": "1.0.9"})

    def open_record() -> dict[str, Any] | None:
        items = ok(controller, "GET", f"/api/v1/devices/{uuid}/updates")["items"]
        return items[0] if items and items[0]["state"] == "in_progress" else None

    record = wait_until(open_record, 20, "the update never started")
    listed = ok(controller, "GET", "/api/v1/updates?state=in_progress")["items"]
    assert [r["id"] for r in listed] == [record["id"]]
    assert ok(controller, "GET", "/api/v1/updates?olderThan=0s")["items"][0]["id"] == record["id"]
    assert ok(controller, "GET", "/api/v1/updates?state=in_progress&olderThan=30m")[
        "items"] == []
    assert ok(controller, "GET", "/api/v1/updates?state=pending")["items"] == []

    cancel = f"/api/v1/devices/{uuid}/updates/{record['id']}/cancel"
    assert call(controller, "POST", cancel, token=None)[0] == 401
    cancelled = ok(controller, "POST", cancel)
    assert (cancelled["id"], cancelled["state"]) == (record["id"], "cancelled")
    assert ok(controller, "GET", f"/api/v1/devices/{uuid}/updates")["items"][0][
        "state"] == "cancelled"
    assert ok(controller, "GET", "/api/v1/updates")["items"] == []
    assert call(controller, "POST", cancel)[0] == 409
    assert call(controller, "POST", f"/api/v1/devices/{uuid}/updates/no-such-id/cancel")[
        0] == 404


def test_schemathesis_finds_no_server_error_in_the_live_process(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    controller = start(tmp_path, controller_factory, simulator_factory, "--speed", "40")
    completed(controller)
    result = subprocess.run(
        [str(ST), "run", f"{controller.url}/api/v1/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "10", "--seed", "1",
         "--max-time", "45", "--generation-database", "none", "--request-timeout", "5",
         "--phases", "examples,coverage,fuzzing", "--no-color",
         "-H", f"Authorization: Bearer {controller.token}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:] + "\n" + controller.tail()
    assert "passed" in report.lower()
    # The process is still healthy after the fuzzing.
    assert call(controller, "GET", "/healthz")[0] == 200
