"""RolloutPolicy decisions compare against versions Rollouts declare, never device claims."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sources.test_registry_flow import POLICY, SECRET, policy_rollouts, registry_push
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow


def test_a_device_claiming_a_huge_version_does_not_block_a_push(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    """A real device reports `app: 9999.0.0` to a real `fleetwave run`; a registry push of
    2.0.1 still becomes a Rollout, and a Rollout's own version still bounds later pushes."""
    source = tmp_path / "rollouts"
    source.mkdir()
    (source / "policy.yaml").write_text(POLICY)
    controller = controller_factory(source, extra_args=("--webhook-secret", SECRET))
    controller.start()
    simulator_factory(1, "--device-id", "liar-01", "--component-version", "app=9999.0.0")

    def liar_seen() -> list[dict[str, Any]]:
        return [d for d in controller.devices()
                if d["uuid"] == "liar-01" and d.get("versions", {}).get("app") == "9999.0.0"]

    wait_until(liar_seen, 30, lambda: f"device never reported: {controller.devices()}")

    status, body = registry_push(controller, "2.0.1")
    assert status == 200, body
    created = wait_until(lambda: policy_rollouts(controller), 10,
                         lambda: f"push skipped: {body}")
    assert [r["spec"]["version"] for r in created] == ["2.0.1"]

    status, body = registry_push(controller, "2.0.0")  # older than the desired 2.0.1
    assert status == 200 and not any(item.get("created") for item in body["items"]), body
    assert [r["spec"]["version"] for r in policy_rollouts(controller)] == ["2.0.1"]
