"""The examples are what operators copy: they must load, mean what their header says,
and be accepted by the cluster's CRD schema as much as by `fleetwave validate`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from fleetwave.resources.crds import openapi_schema
from fleetwave.resources.loading import load_paths
from fleetwave.resources.model import DeviceInventory, Rollout, RolloutPolicy

ROLLOUTS = Path(__file__).resolve().parents[2] / "examples" / "rollouts"
FILES = sorted(ROLLOUTS.glob("*.yaml"))


def load(name: str) -> Rollout | RolloutPolicy | DeviceInventory:
    result = load_paths([ROLLOUTS / name])
    assert result.problems == []
    [doc] = result.documents
    return doc.resource


def test_every_example_loads_without_a_problem() -> None:
    result = load_paths([ROLLOUTS])
    assert [str(p) for p in result.problems] == []
    assert len(result.documents) == len(FILES) >= 6


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_example_opens_with_a_comment_saying_what_it_shows(path: Path) -> None:
    header = path.read_text().split("apiVersion:")[0]
    assert header.startswith("# ") and len(header.splitlines()) >= 2


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_example_is_accepted_by_its_crd_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        validator = Draft202012Validator(openapi_schema(doc["kind"]),
                                         format_checker=FormatChecker())
        assert [e.message for e in validator.iter_errors(doc)] == []


def test_agent_canary_in_a_nightly_berlin_window() -> None:
    rollout = load("agent-canary-nightly.yaml")
    assert isinstance(rollout, Rollout)
    strategy = rollout.spec.strategy
    assert [s.percent for s in strategy.steps] == [5, 25, 50, 100]
    assert strategy.window is not None
    assert (strategy.window.cron, strategy.window.timezone) == ("0 2 * * *", "Europe/Berlin")
    assert strategy.window.duration == timedelta(hours=4)


def test_container_rollout_with_an_http_health_check() -> None:
    rollout = load("container-http-health.yaml")
    assert isinstance(rollout, Rollout)
    assert {c.type for c in rollout.spec.health.checks} == {"http", "container"}
    assert rollout.spec.failure_policy.action == "rollback"
    assert rollout.spec.artifact is not None and rollout.spec.artifact.url is None
    assert (rollout.spec.artifact.digest or "").startswith("sha256:")


def test_manual_approval() -> None:
    rollout = load("manual-approval.yaml")
    assert isinstance(rollout, Rollout)
    assert rollout.spec.strategy.manual_approval is True


def test_paced_rollout_in_each_devices_local_window_with_a_freeze() -> None:
    rollout = load("paced-device-local-window.yaml")
    assert isinstance(rollout, Rollout)
    strategy = rollout.spec.strategy
    assert strategy.max_per_minute == 300
    assert strategy.window is not None and strategy.window.per_device
    assert len(strategy.freezes) == 1 and strategy.not_before is not None


def test_policy_for_acme_app_images() -> None:
    policy = load("policy-acme-app.yaml")
    assert isinstance(policy, RolloutPolicy)
    assert policy.image_pattern == "acme/app:*"


def test_device_inventory() -> None:
    inventory = load("device-inventory.yaml")
    assert isinstance(inventory, DeviceInventory)
    assert all("site" in labels for labels in inventory.labels.values())


def test_budgets_per_region_and_per_store() -> None:
    rollout = load("budget-per-region.yaml")
    assert isinstance(rollout, Rollout)
    budgets = {b.group_by: b.max_in_flight for b in rollout.spec.strategy.budgets}
    assert budgets == {"region": 20, "store": 1}
    assert rollout.spec.strategy.max_in_flight == 200


def test_exponential_ramp() -> None:
    rollout = load("exponential-ramp.yaml")
    assert isinstance(rollout, Rollout)
    ramp = rollout.spec.strategy.ramp
    assert ramp is not None
    assert (ramp.start_per_minute, ramp.factor, ramp.max_per_minute) == (10, 2.0, 640)
    assert ramp.every == timedelta(minutes=5)


def test_mandatory_intermediate_version() -> None:
    rollout = load("mandatory-intermediate.yaml")
    assert isinstance(rollout, Rollout)
    [hop] = rollout.spec.strategy.requires
    assert (hop.below, hop.via, rollout.spec.version) == ("2.0.0", "2.0.0", "3.1.0")


def test_boot_confirmed_success() -> None:
    rollout = load("boot-confirmed.yaml")
    assert isinstance(rollout, Rollout)
    assert rollout.spec.health.confirm_after_restart is True
    assert rollout.spec.health.update_timeout == timedelta(minutes=45)


def test_webhook_gate_before_the_main_wave() -> None:
    rollout = load("webhook-gate.yaml")
    assert isinstance(rollout, Rollout)
    first, main = rollout.spec.strategy.steps
    assert first.gate is None and main.gate is not None
    assert main.gate.secret_ref == "RELEASE_GATE_SECRET"
    assert main.gate.url.startswith("https://")


def test_prometheus_analysis_after_the_canary() -> None:
    rollout = load("prometheus-analysis.yaml")
    assert isinstance(rollout, Rollout)
    canary, main = rollout.spec.strategy.steps
    assert canary.analysis is not None and main.analysis is None
    assert (canary.analysis.maximum, canary.analysis.minimum) == (0.02, None)
    assert canary.analysis.for_.total_seconds() == 600
    assert canary.analysis.url.startswith("http://")
    assert rollout.spec.failure_policy.action == "rollback"
