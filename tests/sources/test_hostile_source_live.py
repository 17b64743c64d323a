"""A git source served over git:// holding an alias bomb and a 50,000-deep list beside a
valid Rollout, read by a real `fleetwave run`: the valid one runs, each hostile file is
reported on its own, the source keeps syncing and the process stays small."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.metrics.scrape import scrape
from tests.resources.hostile import alias_bomb, deep_list
from tests.support.git import BareRepo, GitDaemon
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

MAX_RSS_KIB = 200 * 1024

ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  component: agent
  version: "{version}"
  selector: {{}}
  strategy: {{steps: [{{percent: 100}}]}}
  health: {{stableFor: 0s}}
"""


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def invalid_file_logs(controller: Controller) -> set[str]:
    found = set()
    for line in controller.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "source.invalid_file":
                found.add(entry["problem"])
    return found


def test_hostile_files_are_reported_alone_and_the_valid_rollout_runs(
        tmp_path: Path, git_repo: BareRepo, git_daemon: GitDaemon,
        controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator]) -> None:
    git_repo.commit({"rollouts/agent.yaml": ROLLOUT.format(name="agent", version="1.0.6"),
                     "rollouts/bomb.yaml": alias_bomb(),
                     "rollouts/deep.yaml": deep_list()}, "a valid rollout and two hostile files")
    simulator_factory(5, "--speed", "40")
    controller = controller_factory(git_daemon.url(),
                                    extra_args=("--path", "rollouts", "--poll-interval", "0.5"))
    controller.start()
    assert controller.proc is not None

    def completed() -> bool:
        status = (controller.get("/api/v1/rollouts/agent", ok_only=False) or {}).get("status")
        return isinstance(status, dict) and status.get("phase") == "Completed" and \
            status.get("progress") == "5/5"

    wait_until(completed, 60, lambda: f"{controller.get('/api/v1/rollouts')}\n"
                                      f"{controller.tail()}")
    problems = wait_until(lambda: len(found := invalid_file_logs(controller)) >= 2 and found,
                          10, controller.tail)
    assert any(p.startswith("rollouts/bomb.yaml:1:5: error: refused YAML: anchor &a0")
               for p in problems), problems
    assert any(p.startswith("rollouts/deep.yaml:1:65: error: refused YAML: nesting deeper")
               for p in problems), problems
    page = scrape(controller.url)
    assert page.values("fleetwave_source_invalid_files", by="source") == {
        git_daemon.url(): 2.0}
    assert page.value("fleetwave_source_sync_errors_total", source=git_daemon.url()) in (
        None, 0.0)

    # The source still syncs: a later commit's Rollout arrives beside the hostile files.
    git_repo.commit({"rollouts/nodered.yaml": ROLLOUT.format(name="nodered", version="3.2.0")
                     .replace("component: agent", "component: nodered")}, "another rollout")
    wait_until(lambda: controller.get("/api/v1/rollouts/nodered", ok_only=False) not in (
        None, {"status": 404}), 30, controller.tail)

    peak = peak_rss_kib(controller.proc.pid)
    assert peak < MAX_RSS_KIB, f"fleetwave run peaked at {peak} KiB"

    validate = subprocess.run([sys.executable, "-m", "fleetwave", "validate",
                               str(git_repo.work / "rollouts")],
                              capture_output=True, text=True, timeout=60, check=False)
    assert validate.returncode == 1
    assert "bomb.yaml:1:5: error: refused YAML: anchor &a0 is not allowed" in validate.stderr
    assert "deep.yaml:1:65: error: refused YAML: nesting deeper than 64" in validate.stderr
