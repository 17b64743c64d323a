"""`fleetwave validate` on hostile files: each named with its reason, exit 1, the rest checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.resources.hostile import alias_bomb, deep_list

GOOD = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {name: good}
spec: {component: agent, version: "1.0.6", selector: {}}
"""


def test_validate_names_the_alias_bomb_and_the_deep_file_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "deep.yaml").write_text(deep_list())
    (tmp_path / "good.yaml").write_text(GOOD)
    human = subprocess.run([sys.executable, "-m", "fleetwave", "validate", str(tmp_path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert human.returncode == 1, human.stderr
    assert f"{tmp_path / 'bomb.yaml'}:1:5: error: refused YAML: anchor &a0 is not allowed" \
        in human.stderr
    assert f"{tmp_path / 'deep.yaml'}:1:65: error: refused YAML: nesting deeper than 64" \
        in human.stderr
    machine = subprocess.run([sys.executable, "-m", "fleetwave", "validate", "-o", "json",
                              str(tmp_path)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert machine.returncode == 1
    report = json.loads(machine.stdout)
    files = {Path(p["file"]).name for p in report["problems"] if p["severity"] == "error"}
    assert files == {"bomb.yaml", "deep.yaml"}
