"""Which metrics a PromQL expression reads, and which metrics fleetwave exports.

Prometheus's own parser (promtool) decides whether an expression is valid; this
module only pulls metric names out of one that is, so a test can check that the
dashboard and the alerts ask for nothing fleetwave does not export.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from fleetwave.metrics import build_metrics

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2",
})
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_NUMBER_WORD = re.compile(r"^(?:0x[0-9a-fA-F]+|[0-9].*)$")

TEMPLATE_VARIABLES = re.compile(r"\$\{?(?:__rate_interval|__interval|__range)\}?")
USER_VARIABLES = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?")


def exported_metric_names() -> set[str]:
    """Every series name fleetwave's registry can expose, suffixes included."""
    metrics = build_metrics(CollectorRegistry())
    names: set[str] = set()
    for family in metrics.registry.collect():
        for suffix in SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (by bare name or by `{__name__="..."}`)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS or _NUMBER_WORD.match(word):
            continue
        names.add(word)
    return names


def grafana_to_promql(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana's interval variables by a duration and dashboard variables by a regex."""
    text = TEMPLATE_VARIABLES.sub("5m", expr)
    values = variables or {}
    return USER_VARIABLES.sub(lambda m: values.get(m.group(1), ".*"), text)
