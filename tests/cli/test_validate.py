"""`fleetwave validate`: what users' CI sees. Exit codes, one precise error per
problem (file, line, column, field), JSON for tools, warnings that do not fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fleetwave.cli.main import cli
from fleetwave.cli.output import Cell, render_table, use_colour

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BROKEN = ROOT / "tests" / "resources" / "broken"
FLEETWAVE = Path(sys.executable).parent / "fleetwave"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = run("-o", "json", *args)
    return result.exit_code, json.loads(result.stdout)


ROLLOUT = """\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata:
  name: {name}
spec:
  component: agent
  version: "1.0.6"
"""
SELECT_ALL = "  selector: {}\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- valid input ------------------------------------------------------------------


def test_examples_are_valid_via_the_installed_console_script() -> None:
    proc = subprocess.run([str(FLEETWAVE), "validate", "examples/"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "0 errors" in proc.stderr


def test_examples_json_report_lists_every_file() -> None:
    code, report = run_json(str(EXAMPLES))
    assert code == 0
    assert report["valid"] is True
    assert report["files"] == len(list(EXAMPLES.rglob("*.yaml")) + list(EXAMPLES.rglob("*.yml")))
    assert report["problems"] == []


def test_multi_document_files_and_yml_suffix_are_read(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", ROLLOUT.format(name="a") + SELECT_ALL + "---\n"
          + ROLLOUT.format(name="b") + SELECT_ALL)
    write(tmp_path, "nested/c.yaml", ROLLOUT.format(name="c") + SELECT_ALL)
    write(tmp_path, "notes.txt", "not yaml, not read")
    write(tmp_path, ".github/workflow.yaml", "on: push\n")
    code, report = run_json(str(tmp_path))
    assert (code, report["files"], report["resources"]) == (0, 2, 3)


# -- one precise error per broken file ---------------------------------------------


BROKEN_CASES = [
    pytest.param("unparsable-yaml.yaml", 10, 11, "", "invalid YAML", id="unparsable-yaml"),
    pytest.param("wrong-api-version.yaml", 1, 13, "apiVersion",
                 "use apiVersion: fleetwave.io/v1alpha1", id="wrong-api-version"),
    pytest.param("wrong-kind.yaml", 2, 7, "kind", "did you mean 'Rollout'", id="wrong-kind"),
    pytest.param("unknown-field.yaml", 12, 5, "spec.strategy.maxInflight",
                 "did you mean 'maxInFlight'", id="unknown-field"),
    pytest.param("missing-version.yaml", 5, 1, "spec.version",
                 "missing required field 'version'", id="missing-version"),
    pytest.param("steps-not-increasing.yaml", 12, 18, "spec.strategy.steps[2].percent",
                 "steps must increase: 25 comes after 50", id="steps-not-increasing"),
    pytest.param("last-step-not-100.yaml", 12, 18, "spec.strategy.steps[2].percent",
                 "the last step must be 100", id="last-step-not-100"),
    pytest.param("percent-over-100.yaml", 12, 18, "spec.strategy.steps[2].percent",
                 "120 is above the maximum of 100; use 1 to 100", id="percent-120"),
    pytest.param("bad-cron.yaml", 10, 13, "spec.strategy.window.cron",
                 "is not a valid cron expression", id="bad-cron"),
    pytest.param("unknown-time-zone.yaml", 12, 17, "spec.strategy.window.timezone",
                 "did you mean 'Europe/Berlin'", id="unknown-time-zone"),
    pytest.param("negative-duration.yaml", 10, 20, "spec.health.updateTimeout",
                 "durations cannot be negative", id="negative-duration"),
    pytest.param("duplicate-name.yaml", 13, 9, "metadata.name",
                 "also defined at tests/resources/broken/duplicate-name.yaml:4",
                 id="duplicate-name"),
]


@pytest.mark.parametrize(("filename", "line", "column", "field", "says"), BROKEN_CASES)
def test_each_broken_file_gets_exactly_one_located_error(
        filename: str, line: int, column: int, field: str, says: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, report = run_json(f"tests/resources/broken/{filename}")
    assert code == 1
    assert report["valid"] is False
    [problem] = report["problems"]
    assert problem["file"] == f"tests/resources/broken/{filename}"
    assert (problem["line"], problem["column"], problem["field"]) == (line, column, field)
    assert problem["severity"] == "error"
    assert says in problem["message"]


def test_the_broken_folder_reports_every_problem_in_one_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run("tests/resources/broken")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if ": error: " in ln]
    files = sorted(p.name for p in BROKEN.glob("*.yaml"))
    assert len(lines) == len(files) == len(BROKEN_CASES)
    # Sorted by file, each line starts with file:line:column.
    assert [ln.split(":")[0] for ln in lines] == [f"tests/resources/broken/{f}" for f in files]
    assert "12 files, 0 valid resources, 12 errors, 0 warnings: invalid" in result.stderr


def test_human_report_quotes_the_line_and_points_at_the_column(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run("tests/resources/broken/percent-over-100.yaml")
    assert result.stderr.splitlines()[:3] == [
        "tests/resources/broken/percent-over-100.yaml:12:18: error: "
        "spec.strategy.steps[2].percent: 120 is above the maximum of 100; use 1 to 100 "
        "(cumulative percent of targeted devices (1-100))",
        "   12 |       - percent: 120",
        "      |                  ^",
    ]


def test_all_problems_of_one_file_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", ROLLOUT.format(name="Bad_Name").replace(
        '"1.0.6"', "1.10")
          + "  force: maybe\n  strategy:\n    steps: [{percent: 50}]\n" + SELECT_ALL)
    code, report = run_json(str(tmp_path))
    assert code == 1
    fields = [p["field"] for p in report["problems"]]
    assert fields == ["metadata.name", "spec.version", "spec.force",
                      "spec.strategy.steps[0].percent"]
    assert "put it in quotes" in report["problems"][1]["message"]


def test_json_output_shape(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", ROLLOUT.format(name="r").replace("agent", "agent\n  paused: 3")
          + SELECT_ALL)
    result = run("-o", "json", str(tmp_path))
    report = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert set(report) >= {"valid", "files", "problems"}
    assert report["valid"] is False and report["files"] == 1
    assert report["problems"] == [{
        "file": str(tmp_path / "r.yaml"), "line": 7, "column": 11, "field": "spec.paused",
        "message": "expected true or false, got a number 3", "severity": "error", "name": "r",
    }]


def test_yaml_output_is_the_same_document(tmp_path: Path) -> None:
    import yaml
    write(tmp_path, "r.yaml", ROLLOUT.format(name="r") + SELECT_ALL)
    result = run("-o", "yaml", str(tmp_path))
    assert yaml.safe_load(result.stdout)["valid"] is True


# -- usage errors exit 2 ------------------------------------------------------------


@pytest.mark.parametrize("args", [
    pytest.param([], id="no-paths"),
    pytest.param(["does/not/exist.yaml"], id="missing-path"),
    pytest.param(["-o", "xml", "examples"], id="unknown-output"),
    pytest.param(["--fleet", "no-such-fleet.json", "examples"], id="missing-fleet-file"),
])
def test_usage_errors_exit_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_unreadable_fleet_snapshot_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "fleet.json", '{"devices": 3}')
    result = run("--fleet", str(tmp_path / "fleet.json"), str(EXAMPLES))
    assert result.exit_code == 2
    assert "--fleet" in result.stderr


def test_usage_error_via_the_console_script() -> None:
    proc = subprocess.run([str(FLEETWAVE), "validate", "nowhere/"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


# -- warnings: printed, exit 0 unless --strict ------------------------------------


CONTRADICTORY = ROLLOUT.replace("{name}", "r") + """\
  selector:
    matchExpressions:
      - {key: env, operator: In, values: [production]}
      - {key: env, operator: NotIn, values: [production]}
"""


def test_provably_empty_selector_warns_but_passes(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", CONTRADICTORY)
    code, report = run_json(str(tmp_path))
    assert code == 0 and report["valid"] is True
    [warning] = report["problems"]
    assert warning["severity"] == "warning"
    assert (warning["line"], warning["field"]) == (11, "spec.selector.matchExpressions[1]")
    assert "matches no device" in warning["message"]


def test_strict_turns_warnings_into_failure(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", CONTRADICTORY)
    result = run("--strict", str(tmp_path))
    assert result.exit_code == 1
    assert ": warning: " in result.stderr
    assert "--strict" in result.stderr


def test_empty_folder_is_a_warning(tmp_path: Path) -> None:
    code, report = run_json(str(tmp_path))
    assert code == 0
    assert "no .yaml or .yml files" in report["problems"][0]["message"]


FLEET = {"items": [
    {"uuid": "d1", "labels": {"device_type": "rpi4", "env": "production"},
     "versions": {"agent": "1.0.5"}},
    {"uuid": "d2", "labels": {"device_type": "rpi3"}, "versions": {"agent": "1.0.5"}},
]}


@pytest.mark.parametrize(("selector", "warns"), [
    pytest.param("{matchLabels: {device_type: rpi4}}", False, id="matches-d1"),
    pytest.param("{matchLabels: {device_type: rpi5}}", True, id="no-such-label-value"),
    pytest.param("{devices: [d9]}", True, id="unknown-uuid"),
    pytest.param("{matchLabels: {site: hamburg}}", False, id="label-from-inventory"),
])
def test_fleet_snapshot_warns_when_a_selector_matches_no_device(
        tmp_path: Path, selector: str, warns: bool) -> None:
    write(tmp_path, "fleet.json", json.dumps(FLEET))
    write(tmp_path, "rollouts/r.yaml", ROLLOUT.format(name="r") + f"  selector: {selector}\n")
    write(tmp_path, "rollouts/inventory.yaml", """\
apiVersion: fleetwave.io/v1alpha1
kind: DeviceInventory
metadata: {name: inv}
spec:
  devices: [{uuid: d2, labels: {site: hamburg}}]
""")
    code, report = run_json("--fleet", str(tmp_path / "fleet.json"), str(tmp_path / "rollouts"))
    assert code == 0
    warnings = [p for p in report["problems"] if p["severity"] == "warning"]
    assert bool(warnings) is warns
    if warns:
        assert warnings[0]["field"] == "spec.selector"
        assert warnings[0]["line"] == 8
        assert "none of the 2 devices" in warnings[0]["message"]


# -- colour: only on a terminal, never with NO_COLOR --------------------------------


class _Tty:
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_tty_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert use_colour(_Tty()) is True  # type: ignore[arg-type]
    assert use_colour(sys.stdout if not sys.stdout.isatty() else None) in (False, True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(_Tty()) is False  # type: ignore[arg-type]


def test_captured_output_has_no_escape_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run("tests/resources/broken")
    assert "\x1b[" not in result.stderr


def test_table_rendering_aligns_plain_text_and_styles_only_with_colour() -> None:
    rows = [["agent-1-0-6", Cell("Completed", fg="green")], ["x", None]]
    assert render_table(["name", "phase"], rows) == (
        "NAME         PHASE\nagent-1-0-6  Completed\nx            -")
    assert "\x1b[" in render_table(["name", "phase"], rows, colour=True)


# -- other tools' YAML in the same repository ----------------------------------------


@pytest.mark.parametrize(("text", "skipped"), [
    pytest.param("groups:\n  - name: fleetwave\n    rules: []\n", True, id="prometheus-rules"),
    pytest.param("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n",
                 True, id="kubernetes-deployment"),
    pytest.param("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\n"
                 "spec: {}\n", True, id="argo-rollout"),
    pytest.param("apiVersion: fleetwav.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\n"
                 "spec: {}\n", False, id="typo-in-our-group-is-ours"),
    pytest.param("kind: Rollout\nmetadata: {name: x}\nspec: {}\n", False,
                 id="our-kind-without-apiversion-is-ours"),
    pytest.param("metadata: {name: x}\nspec: {component: agent}\n", False,
                 id="resource-shape-without-apiversion-is-ours"),
])
def test_other_tools_yaml_is_skipped_but_near_misses_are_errors(
        tmp_path: Path, text: str, skipped: bool) -> None:
    write(tmp_path, "other.yaml", text)
    code, report = run_json(str(tmp_path))
    assert (code == 0) is skipped
    assert bool(report["skipped"]) is skipped
