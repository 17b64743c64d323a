"""examples/grafana/alerts.yaml: Prometheus's own promtool (Debian's prometheus package,
installed by scripts/test) checks the rules and runs their unit tests; the rules only
query metrics that fleetwave exports; the chart ships the very same file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import exported_metric_names, metric_names
from tests.deploy.tools import ROOT, find_tool, run_tool

GRAFANA = ROOT / "examples" / "grafana"
ALERTS = GRAFANA / "alerts.yaml"
ALERTS_TEST = GRAFANA / "alerts_test.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return find_tool("promtool")


def rules() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules(promtool: Path) -> None:
    result = run_tool([promtool, "check", "rules", ALERTS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    result = run_tool([promtool, "test", "rules", ALERTS_TEST.name], cwd=GRAFANA)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested() -> None:
    tested = {case["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    required = {"FleetwaveRolloutFailed", "FleetwaveRolloutPaused", "FleetwaveStaleUpdates",
                "FleetwaveMQTTHighDropRate", "FleetwaveGitSyncFailing", "FleetwaveControllerDown",
                "FleetwaveNoReconcile"}
    assert required <= tested
    assert required <= {r["alert"] for r in rules()}


@pytest.mark.parametrize("rule", rules(), ids=lambda r: str(r["alert"]))
def test_rules_query_only_exported_metrics(rule: dict[str, object]) -> None:
    used = metric_names(str(rule["expr"]))
    assert used, "an alert that reads no fleetwave metric"
    missing = used - exported_metric_names()
    assert not missing, f"not exported by fleetwave: {missing}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: str(r["alert"]))
def test_rules_have_severity_summary_and_description(rule: dict[str, object]) -> None:
    assert rule["labels"]["severity"] in ("info", "warning", "critical")  # type: ignore[index]
    assert {"summary", "description"} <= set(rule["annotations"])  # type: ignore[arg-type]


def test_the_chart_ships_the_same_rules() -> None:
    copy = ROOT / "chart" / "files" / "alerts.yaml"
    assert copy.read_bytes() == ALERTS.read_bytes(), \
        "chart/files/alerts.yaml drifted: cp examples/grafana/alerts.yaml chart/files/"
