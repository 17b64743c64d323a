"""strategy.download end to end: `fleetwave run`, a real Mosquitto and `fleetwave simulate`.

Windows are cron (minute) based, so the test sets them around the current minute instead
of waiting for a night: the download window opened at the start of this minute and closes
at the next one, when the install window opens. Every device downloads first, installs
only once the install window is open, and its install uses the downloaded artifact.
"""

from __future__ import annotations

import ast
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwave.updates.model import UpdateRecord
from tests.runtime.test_run_end_to_end import phase_of, write_rollout
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.records import stored_attempts

pytestmark = pytest.mark.slow

DEVICES = 20
SHA = "5" * 64


def cron_at(t: float) -> str:
    """A daily cron firing at `t`'s UTC minute."""
    at = datetime.fromtimestamp(t, UTC)
    return f"{at.minute} {at.hour} * * *"


def rollout_yaml(download_opens: float, install_opens: float) -> str:
    lasts = f"{int(install_opens - download_opens)}s"
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: agent-rollout}}
spec:
  component: agent
  version: "1.0.6"
  artifact: {{url: "https://artifacts.example/agent-1.0.6.tar.gz", sha256: "{SHA}"}}
  selector: {{}}
  strategy:
    steps: [{{percent: 100}}]
    window: {{cron: "{cron_at(install_opens)}", duration: 10m}}
    download:
      window: {{cron: "{cron_at(download_opens)}", duration: {lasts}}}
  health: {{ackTimeout: 30s, updateTimeout: 30s, stableFor: 1s}}
"""


def simulator_fetches(simulator: Simulator) -> dict[str, int]:
    """`fetches` of the simulator's `simulator.stopping` line (logged when it stops)."""
    lines = (simulator.workdir / "simulator.log").read_text(errors="replace").splitlines()
    for line in reversed(lines):
        found = re.search(r"fetches=(\{[^}]*\})", line)
        if "simulator.stopping" in line and found:
            figures: dict[str, int] = ast.literal_eval(found.group(1))
            return figures
    raise AssertionError("the simulator logged no figures:\n" + "\n".join(lines[-20:]))


def test_devices_download_in_one_window_and_install_in_the_next(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    now = time.time()
    if now % 60 > 40:  # too little of this minute left to download in: use the next one
        time.sleep(60 - now % 60 + 0.5)
        now = time.time()
    download_opens = math.floor(now / 60) * 60
    install_opens = download_opens + 60
    source = tmp_path / "rollouts"
    write_rollout(source, rollout_yaml(download_opens, install_opens))
    simulator = simulator_factory(DEVICES, "--speed", "40", "--seed", "5")
    controller = controller_factory(source)
    controller.start()

    status = wait_until(lambda: (s := phase_of(controller)()).get("counts", {}).get(
        "downloaded") == DEVICES and s, max(5.0, install_opens - time.time() - 1),
        lambda: f"not every device downloaded before the install window: "
                f"{phase_of(controller)()}\n{controller.tail()}")
    assert time.time() < install_opens
    assert status["phase"] == "Waiting"
    assert all(r.action == "download" for r in stored_attempts(controller.store, "agent-rollout"))

    wait_until(lambda: phase_of(controller)().get("phase") == "Completed",
               install_opens - time.time() + 30,
               lambda: f"not completed: {phase_of(controller)()}\n{controller.tail()}")
    by_device: dict[str, dict[str, UpdateRecord]] = {}
    for r in stored_attempts(controller.store, "agent-rollout"):
        assert r.action not in by_device.setdefault(r.device, {}), f"two {r.action}s: {r}"
        by_device[r.device][r.action] = r
    assert len(by_device) == DEVICES
    for device, attempts in by_device.items():
        download, install = attempts["download"], attempts["update"]
        assert download.state == "succeeded", download
        assert install.state == "succeeded", install
        assert download_opens <= download.created_at < install_opens, (device, download)
        assert install.created_at >= install_opens, (device, install)
        assert install.release > download.release, (device, download, install)
        # installed at once when the window opened (the first passes of the window)
        assert install.created_at - install_opens < 10, (device, install)

    simulator.stop()
    # every install used the artifact its download had fetched: none fetched it again
    assert simulator_fetches(simulator) == {"downloaded": DEVICES, "cached": DEVICES}
