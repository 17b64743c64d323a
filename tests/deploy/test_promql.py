"""The metric-name extraction the dashboard and alert checks rely on: if it missed a
name, a query on a metric fleetwave does not export would pass unnoticed."""

from __future__ import annotations

import pytest

from tests.deploy.promql import exported_metric_names, grafana_to_promql, metric_names


@pytest.mark.parametrize(("expr", "names"), [
    pytest.param('up{job="fleetwave"} == 0', {"up"}, id="bare-selector"),
    pytest.param('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=~"y|z"}[5m])))',
                 {"a_bucket"}, id="functions-and-grouping"),
    pytest.param("sum without (reason) (rate(b_total[1h])) / on (ns) group_left c",
                 {"b_total", "c"}, id="binary-with-matching"),
    pytest.param('{__name__="d"} offset 5m', {"d"}, id="name-matcher"),
    pytest.param('count(e == 1) or vector(0)', {"e"}, id="or-vector"),
    pytest.param('time() - max by (source) (f{source="by (x)"})', {"f"}, id="keywords-in-strings"),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_variables_become_promql() -> None:
    expr = 'rate(x{ns=~"$namespace", r=~"${rollout}"}[$__rate_interval]) * $__interval'
    assert grafana_to_promql(expr) == 'rate(x{ns=~".*", r=~".*"}[5m]) * 5m'


def test_exported_names_carry_prometheus_client_suffixes() -> None:
    names = exported_metric_names()
    assert {"fleetwave_build_info", "fleetwave_device_updates_total",
            "fleetwave_update_duration_seconds_bucket", "fleetwave_update_duration_seconds_count",
            "fleetwave_rollout_phase", "fleetwave_mqtt_messages_dropped_total"} <= names
    assert "fleetwave_device_updates" not in names
    assert "fleetwave_build" not in names
