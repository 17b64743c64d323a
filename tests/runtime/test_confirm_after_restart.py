"""`health.confirmAfterRestart` through `fleetwave run` and `fleetwave simulate` (real
Mosquitto, real processes): a simulated device restarts after its install (a new boot id in
its retained state) before it reports success, and only that restart settles its record.
Devices told to skip the restart (`--no-restart-rate`) report `update_succeeded` and the new
version all the same: their records wait in `awaiting_restart` and time out `NoRestart`.
A real reboot cannot run here; the simulator's boot id stands in for
/proc/sys/kernel/random/boot_id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwave.simulator.device import boot_id_of
from fleetwave.updates.model import Reason, UpdateRecord, UpdateState
from tests.support.processes import Controller, Simulator, wait_until
from tests.support.records import stored_attempts

pytestmark = pytest.mark.slow

DEVICES = 20

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: agent-rollout}
spec:
  component: agent
  version: "1.0.6"
  selector: {}
  strategy: {steps: [{percent: 100}], maxInFlight: 20}
  health: {ackTimeout: 15s, updateTimeout: 8s, stableFor: 1s, confirmAfterRestart: true}
  failurePolicy: {maxFailurePercent: 100, minSample: 100, retries: 0,
                  rollbackFailedDevices: false}
"""


def records(store_url: str) -> list[UpdateRecord]:
    return [r for r in stored_attempts(store_url, "agent-rollout") if r.action == "update"]


def test_success_counts_only_after_a_restart(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(DEVICES, "--speed", "40", "--seed", "7", "--no-restart-rate", "0.3")
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == DEVICES, 30, "fleet did not report in")
    (source / "agent.yaml").write_text(ROLLOUT)
    seen: dict[str, int] = {}

    def all_final() -> list[UpdateRecord] | None:
        rollout: Any = controller.get("/api/v1/rollouts/agent-rollout", ok_only=False)
        if isinstance(rollout, dict) and "name" in rollout:  # loaded (not a 404 body)
            counts = (rollout.get("status") or {}).get("counts") or {}
            seen["awaiting"] = max(seen.get("awaiting", 0), counts.get("awaiting_restart", 0))
        found = records(controller.store)
        return found if len(found) == DEVICES and all(r.is_terminal for r in found) else None

    found = wait_until(all_final, 40, lambda: "records not final: " + str(sorted(
        (r.state.value, str(r.reason), str(r.boot_id)) for r in records(controller.store))))
    by_state = {(r.state, r.reason) for r in found}
    assert by_state == {(UpdateState.SUCCEEDED, Reason.CONFIRMED_AFTER_RESTART),
                        (UpdateState.TIMEOUT, Reason.NO_RESTART)}, by_state
    for r in found:
        # The boot id recorded is the device's first boot, the one before its install.
        assert r.confirm_after_restart and r.boot_id == boot_id_of(r.device, 0), r
    skipped = [r for r in found if r.reason == Reason.NO_RESTART]  # 11 of 20 with seed 7
    assert seen.get("awaiting", 0) >= 1, "no device was ever counted awaiting_restart"
    # They do run 1.0.6 and said so; without a restart that is not a success.
    versions = {d["uuid"]: d["versions"]["agent"] for d in controller.devices()}
    assert all(versions[r.device] == "1.0.6" for r in skipped)
    assert all("after a restart within updateTimeout" in (r.error or "") for r in skipped)
