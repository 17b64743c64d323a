"""After a rollback, a revert of the Rollout's version is proposed on a branch of the real
git repository the controller reads, never pushed to the source branch itself."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fleetwave.sources.reverts import previous_version, revert_document
from fleetwave.updates.model import UpdateRecord, UpdateState
from tests.support.git import BareRepo
from tests.support.processes import Controller, Simulator, wait_until

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: agent-rollout}
spec:
  component: agent
  version: "1.0.6"
  selector: {}
  strategy: {steps: [{percent: 5}, {percent: 100}], maxInFlight: 300}
  health: {ackTimeout: 15s, updateTimeout: 30s, stableFor: 1s}
  failurePolicy: {maxFailurePercent: 10, minSample: 10, retries: 0, action: rollback}
"""
OTHER = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: other}
spec: {component: nodered, version: "3.2.0", selector: {}}
"""


def record(from_version: str | None, action: str = "update") -> UpdateRecord:
    return UpdateRecord(id="x", device="d", rollout="r", component="agent", to_version="1.0.6",
                        state=UpdateState.SUCCEEDED, attempt=1, correlation_id="c",
                        created_at=0.0, updated_at=0.0, from_version=from_version,
                        action=action)


def test_the_previous_version_is_what_most_devices_ran_before() -> None:
    records = [record("1.0.5"), record("1.0.5"), record("1.0.4"), record(None),
               record("1.0.6", action="rollback")]
    assert previous_version(records) == "1.0.5"
    assert previous_version([]) is None


def test_only_the_named_rollout_changes_in_a_multi_document_file() -> None:
    text = ROLLOUT + "---\n" + OTHER
    reverted = revert_document(text, "agent-rollout", "1.0.5")
    assert reverted is not None
    docs = list(yaml.safe_load_all(reverted))
    assert [d["spec"]["version"] for d in docs] == ["1.0.5", "3.2.0"]
    assert docs[0]["spec"]["failurePolicy"]["action"] == "rollback"
    assert revert_document(text, "no-such-rollout", "1.0.5") is None


@pytest.mark.slow
def test_a_rollback_proposes_a_revert_branch_in_the_git_source(
        tmp_path: Path, git_repo: BareRepo, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    git_repo.commit({"rollouts/agent.yaml": ROLLOUT}, "Roll out agent 1.0.6")
    source_head = git_repo.head("main")
    simulator_factory(300, "--speed", "40", "--seed", "3", "--fail-rate", "0.4")
    controller = controller_factory(git_repo.file_url, extra_args=(
        "--path", "rollouts", "--propose-reverts"))
    controller.start()

    def rolled_back() -> bool:
        rollout = controller.get("/api/v1/rollouts/agent-rollout", ok_only=False)
        # Before the first sync the answer is a 404, read back as {"status": 404}.
        status = rollout.get("status") if isinstance(rollout, dict) else None
        return isinstance(status, dict) and status.get("phase") == "RolledBack"

    wait_until(rolled_back, 90, controller.tail)
    branch = "fleetwave/revert-agent-rollout-1.0.6"

    def proposed() -> bool:
        return bool(git_repo.git("branch", "--list", branch, cwd=git_repo.path).strip())

    wait_until(proposed, 30, lambda: f"no branch {branch}\n{controller.tail()}")
    doc = yaml.safe_load(git_repo.read("rollouts/agent.yaml", branch))
    assert doc["spec"]["version"] == "1.0.5"
    subject = "fleetwave: revert agent-rollout to 1.0.5 after its rollback"
    assert git_repo.show(branch, "%s") == subject
    assert git_repo.show(branch, "%an") == "fleetwave"
    assert git_repo.show(f"{branch}~1", "%H") == source_head, "the branch starts at main"
    assert git_repo.head("main") == source_head, "main itself is never touched"
    versions = collections.Counter(d["versions"]["agent"] for d in controller.devices())
    assert versions["1.0.5"] > 0
