"""`/metrics` of a real `fleetwave run` after a rollout whose outcome the test controls.

200 simulated devices (fixed seed) take one Rollout to 100 % while the simulator fails
10 % of updates and sends a malformed message before 20 % of its statuses. The failure
budget is set so the rollout still completes; every figure on the page is then checked
against an independent witness: the simulator's own report, the API's status, and the
update records in the store.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.metrics import DROP_REASONS
from fleetwave.store import open_store
from fleetwave.updates.model import UpdateRecord
from tests.metrics.scrape import Page, device_identifiers_in, scrape
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

DEVICES = 200
ROLLOUT = "agent-rollout"
ROLLOUT_YAML = f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {ROLLOUT}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy:
    steps: [{{percent: 10}}, {{percent: 100}}]
    maxInFlight: 300
  health: {{ackTimeout: 15s, updateTimeout: 30s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 100, minSample: 10, retries: 0,
                  rollbackFailedDevices: false}}
"""


def store_records(store_url: str) -> list[UpdateRecord]:
    async def load() -> list[UpdateRecord]:
        store = open_store(store_url)
        try:
            return list(await store.updates.of_rollout(ROLLOUT))
        finally:
            await store.close()
    return asyncio.run(load())


def simulator_report(log: Path) -> dict[str, int]:
    """The versions of `agent` in the simulator's last `simulator.fleet` line."""
    lines = [line for line in log.read_text().splitlines() if "simulator.fleet" in line]
    assert lines, f"the simulator reported nothing: {log.read_text()[-2000:]}"
    last = lines[-1]
    if last.lstrip().startswith("{"):
        versions: dict[str, int] = json.loads(last)["versions"]
        return versions
    match = re.search(r"versions=(\{[^}]*\})", last)
    assert match, last
    parsed: dict[str, int] = ast.literal_eval(match.group(1))
    return parsed


@pytest.fixture
def finished(tmp_path: Path, controller_factory: Callable[..., Controller],
             simulator_factory: Callable[..., Simulator]) -> dict[str, Any]:
    """Run the scenario to completion; hand over the page, the API's view and the witnesses."""
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "agent.yaml").write_text(ROLLOUT_YAML)
    simulator = simulator_factory(DEVICES, "--speed", "40", "--seed", "7", "--fail-rate", "0.1",
                                  "--garbage-rate", "0.2")
    controller = controller_factory(source)
    started = time.time()
    controller.start()

    def status() -> dict[str, Any]:
        got = controller.get(f"/api/v1/rollouts/{ROLLOUT}", ok_only=False) or {}
        return dict(got.get("status") or {})

    wait_until(lambda: status().get("phase") == "Completed", 120,
               lambda: f"not completed: {status()}\n{controller.tail()}")
    # The page and the API agree once the last reconcile pass after completion has run.
    def settled() -> tuple[Page, dict[str, Any]] | None:
        page, rollout = scrape(controller.url), controller.rollout(ROLLOUT)
        counts = rollout["status"]["counts"]
        on_page = page.values("fleetwave_rollout_devices", "state", rollout=ROLLOUT)
        agent = page.values("fleetwave_devices", "version", component="agent")
        if on_page == {k: float(v) for k, v in counts.items()} and sum(agent.values()) == DEVICES:
            return page, rollout
        return None

    page, rollout = wait_until(settled, 20, "/metrics never agreed with the API's status")
    devices = controller.devices()
    simulator.stop()  # its last report is written on the way out
    return {"page": page, "rollout": rollout, "devices": devices, "started": started,
            "records": store_records(controller.store),
            "reported": simulator_report(tmp_path / "simulator.log")}


def test_the_page_agrees_with_the_simulator_the_api_and_the_store(
        finished: dict[str, Any]) -> None:
    page: Page = finished["page"]
    rollout: dict[str, Any] = finished["rollout"]
    records: list[UpdateRecord] = finished["records"]
    reported: dict[str, int] = finished["reported"]

    # Devices per version: what the simulated fleet runs, with versions no Rollout declares
    # (1.0.5, and nodered, which no Rollout names) counted as `other`.
    expected: dict[str, float] = {}
    for v, n in reported.items():
        label = v if v == "1.0.6" else "other"
        expected[label] = expected.get(label, 0.0) + n
    assert page.values("fleetwave_devices", "version", component="agent") == expected
    assert page.values("fleetwave_devices", "version", component="other") == {
        "other": float(DEVICES)}
    assert page.value("fleetwave_devices_online") == DEVICES

    # Rollout phase, progress and counts: the API's status, one series per phase held.
    assert page.values("fleetwave_rollout_phase", "phase", rollout=ROLLOUT) == {"Completed": 1.0}
    status = rollout["status"]
    assert page.value("fleetwave_rollout_targeted_devices", rollout=ROLLOUT) == DEVICES
    assert page.value("fleetwave_rollout_current_step", rollout=ROLLOUT) == status["currentStep"]
    assert page.value("fleetwave_rollout_failure_ratio", rollout=ROLLOUT) == pytest.approx(
        status["failureRate"] / 100)

    # Updates that ended, per final state: one per record in the store.
    final = collections.Counter(r.state.value for r in records if r.is_terminal)
    failed = final["failed"]
    assert failed > 0 and final["succeeded"] > 0, final  # the injection did inject
    assert reported.get("1.0.5", 0) == failed  # a failed update leaves the old version
    assert reported.get("1.0.6", 0) == final["succeeded"]
    assert page.values("fleetwave_device_updates_total", "state", component="agent") == {
        s: float(n) for s, n in final.items()}
    assert page.values("fleetwave_update_duration_seconds_count", "state",
                       component="agent") == {s: float(n) for s, n in final.items()}
    assert page.value("fleetwave_update_duration_seconds_bucket", component="agent",
                      state="succeeded", le="+Inf") == final["succeeded"]

    # MQTT: every update command published once; every kind of inbound message seen.
    updates = [r for r in records if r.action == "update"]
    assert len(updates) == DEVICES  # retries: 0, so one command per device
    assert page.value("fleetwave_mqtt_messages_published_total", kind="update") == len(updates)
    received = page.values("fleetwave_mqtt_messages_received_total", "kind")
    assert set(received) >= {"status", "state", "online"}
    assert all(n > 0 for n in received.values()), received
    assert page.value("fleetwave_mqtt_connected") == 1

    # The injected garbage, dropped for its reason (see simulator/device.py `_garbage`).
    dropped = page.values("fleetwave_mqtt_messages_dropped_total", "reason")
    assert set(dropped) == set(DROP_REASONS)
    for reason in ("invalid_json", "invalid_schema", "uuid_mismatch", "too_large"):
        assert dropped[reason] > 0, dropped
    assert dropped["unknown_topic"] == 0

    # The engine and the source.
    reconciles = page.value("fleetwave_reconcile_duration_seconds_count")
    assert reconciles is not None and reconciles > 0
    assert page.value("fleetwave_reconcile_errors_total") == 0
    revisions = page.values("fleetwave_source_revision_info", "revision")
    assert revisions == {rollout["source"]["revision"]: 1.0}, revisions
    synced = [s.value for s in page.samples
              if s.name == "fleetwave_source_last_sync_timestamp_seconds"]
    assert len(synced) == 1 and finished["started"] - 1 <= synced[0] <= time.time(), synced


def test_every_name_is_prefixed_and_no_label_names_a_device(finished: dict[str, Any]) -> None:
    page: Page = finished["page"]
    assert page.families and all(name.startswith("fleetwave_") for name in page.families), [
        n for n in page.families if not n.startswith("fleetwave_")]
    assert device_identifiers_in(page, finished["devices"]) == set()
    assert len(finished["devices"]) == DEVICES  # the check above had devices to look for
