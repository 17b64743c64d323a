"""examples/grafana/fleetwave-dashboard.json. No Grafana server runs here: every panel's
query is written as a recording rule (Grafana's interval and dashboard variables replaced)
and parsed by Prometheus's own parser, `promtool check rules`; every metric it reads must
be one fleetwave exports; the chart ships the very same file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import exported_metric_names, grafana_to_promql, metric_names
from tests.deploy.tools import ROOT, find_tool, run_tool

DASHBOARD = ROOT / "examples" / "grafana" / "fleetwave-dashboard.json"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title/refId, expr) for every panel target and query variable."""
    found = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, f"variable {var['name']}: unexpected query {query!r}"
            found.append((f"${var['name']}", match.group(1)))
    return found


def test_dashboard_identity_and_datasource_variable() -> None:
    data = dashboard()
    assert data["uid"] == "fleetwave"
    assert data["title"] == "fleetwave"
    assert "__inputs" not in data, "provisioned dashboards take the data source from a variable"
    names = [v["name"] for v in data["templating"]["list"]]
    assert names[0] == "datasource"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    all_panels = dashboard()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_the_dashboard_shows_what_the_design_promises() -> None:
    used = set().union(*(metric_names(grafana_to_promql(e)) for _, e in queries()))
    for metric in ("fleetwave_devices", "fleetwave_rollout_phase",
                   "fleetwave_rollout_progress_ratio", "fleetwave_rollout_failure_ratio",
                   "fleetwave_device_updates_total", "fleetwave_update_duration_seconds_bucket",
                   "fleetwave_mqtt_messages_received_total",
                   "fleetwave_mqtt_messages_published_total",
                   "fleetwave_mqtt_messages_dropped_total",
                   "fleetwave_reconcile_duration_seconds_bucket",
                   "fleetwave_source_last_sync_timestamp_seconds",
                   "fleetwave_source_sync_errors_total"):
        assert metric in used, f"no panel shows {metric}"


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[w for w, _ in queries()])
def test_queries_read_only_exported_metrics(where: str, expr: str) -> None:
    used = metric_names(grafana_to_promql(expr))
    assert used, f"{where} reads no metric"
    missing = used - exported_metric_names()
    assert not missing, f"{where} reads metrics fleetwave does not export: {missing}"


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[w for w, _ in queries()])
def test_rates_use_the_rate_interval(where: str, expr: str) -> None:
    for window in re.findall(r"\b(?:rate|increase|irate)\([^\[]*\[([^\]]+)\]", expr):
        assert window == "$__rate_interval", f"{where}: use [$__rate_interval], not [{window}]"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
             for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool([promtool, "check", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_ships_the_same_dashboard() -> None:
    copy = ROOT / "chart" / "files" / "fleetwave-dashboard.json"
    assert copy.read_bytes() == DASHBOARD.read_bytes(), (
        "chart/files/fleetwave-dashboard.json drifted: "
        "cp examples/grafana/fleetwave-dashboard.json chart/files/")
