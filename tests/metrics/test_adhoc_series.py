"""Ad-hoc updates add no series to `/metrics`.

An ad-hoc update (`POST /devices/{uuid}/update`) is a rollout named after its device; its
gauges are counted under one `rollout="adhoc"`, so 100 of them hold no more series than one,
and no label value names a device. Real processes: Mosquitto, `fleetwave run` on SQLite and
`fleetwave simulate`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.metrics.scrape import device_identifiers_in, scrape
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

DEVICES = 100


def test_a_hundred_ad_hoc_updates_hold_no_more_series_than_one(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(DEVICES, "--speed", "200", "--seed", "3")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 60, "devices did not report in")
    uuids = sorted(d["uuid"] for d in controller.devices())

    def on_new_version() -> int:
        return sum(d["versions"].get("agent") == "9.9.9" for d in controller.devices())

    def adhoc_succeeded() -> float:
        """Devices succeeded over every ad-hoc rollout (they then wait out the default
        stableFor of 5 minutes, Progressing)."""
        return scrape(controller.url).value("fleetwave_rollout_devices", rollout="adhoc",
                                            state="succeeded") or 0.0

    controller.post(f"/api/v1/devices/{uuids[0]}/update",
                    {"component": "agent", "version": "9.9.9"})
    wait_until(lambda: on_new_version() == 1 and adhoc_succeeded() == 1, 60,
               lambda: f"first ad-hoc update not done: {controller.tail()}")
    after_one = scrape(controller.url)

    for uuid in uuids[1:]:
        controller.post(f"/api/v1/devices/{uuid}/update",
                        {"component": "agent", "version": "9.9.9"})
    wait_until(lambda: on_new_version() == DEVICES and adhoc_succeeded() == DEVICES, 120,
               lambda: f"{on_new_version()} of {DEVICES} updated: {controller.tail()}")
    after_hundred = scrape(controller.url)

    assert len(after_hundred.series()) <= len(after_one.series()), (
        sorted(after_hundred.series() - after_one.series()))
    assert device_identifiers_in(after_hundred, controller.devices()) == set()
