"""Ad-hoc updates of one device through the API of a real `fleetwave run`: a scheduled time
reaches the device, which waits for it; a newer ad-hoc update of the same device and
component replaces the older one instead of conflicting with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow


def api_rollouts(controller: Controller) -> list[dict[str, Any]]:
    return [r for r in controller.get("/api/v1/rollouts")["items"]
            if r["source"]["kind"] == "api"]


def test_scheduled_and_replaced_ad_hoc_updates(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(3, "--speed", "40", "--device-id", "dev-a", "--device-id", "dev-b",
                      "--device-id", "dev-c")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == 3, 30, "devices did not report in")

    at = datetime.now(UTC) + timedelta(seconds=4)
    scheduled = at.isoformat().replace("+00:00", "Z")
    sent = time.time()
    controller.post("/api/v1/devices/dev-a/update",
                    {"component": "agent", "version": "1.0.7", "scheduled_time": scheduled})

    def latest() -> dict[str, Any]:
        items: list[dict[str, Any]] = controller.get("/api/v1/devices/dev-a/updates")["items"]
        return items[0] if items else {}

    wait_until(lambda: latest().get("state") == "scheduled", 10, lambda: f"{latest()}")
    wait_until(lambda: latest().get("state") == "succeeded", 20, lambda: f"{latest()}")
    assert time.time() - sent >= 3.5, "the device did not wait for the scheduled time"

    controller.post("/api/v1/devices/dev-b/update", {"component": "agent", "version": "1.0.7"})
    controller.post("/api/v1/devices/dev-b/update", {"component": "agent", "version": "1.0.8"})
    names = [r["name"] for r in api_rollouts(controller)]
    assert not any("dev-b" in n and "1.0.7" in n for n in names), names
    assert any("dev-b" in n and "1.0.8" in n for n in names), names
    wait_until(lambda: {d["uuid"]: d["versions"]["agent"] for d in controller.devices()}
               .get("dev-b") == "1.0.8", 20, lambda: f"{controller.devices()}")
