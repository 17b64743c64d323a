"""YAML text to validated resources, with every problem located by file, line and field.

Users run `fleetwave validate` in their CI on each pull request, so an error
must be enough to fix the file: where (file:line:column), which field
(`spec.strategy.steps[2].percent`) and what is accepted. All problems of a file
are collected in one pass; nothing stops at the first.
"""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from fleetwave import GROUP_VERSION
from fleetwave.protocol.versions import compare, version_key
from fleetwave.resources.durations import DurationError, parse_duration
from fleetwave.resources.model import (
    DEVICE_TIMEZONE,
    DeviceInventory,
    Operator,
    Requirement,
    Resource,
    Rollout,
    Selector,
    SourceRef,
    parse_time,
    resource_from,
)
from fleetwave.resources.schema import (
    DIGEST_PATTERN,
    KINDS,
    LABEL_NAME_PATTERN,
    RESOURCE_NAME_PATTERN,
    SCHEMAS,
    SHA256_PATTERN,
    Schema,
)
from fleetwave.resources.selectors import empty_selector_reasons, selector_matches

YAML_SUFFIXES = (".yaml", ".yml")
Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One error or warning, located as precisely as the input allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    severity: str = "error"
    name: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        fld = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity}:{fld} {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "field": self.field, "message": self.message, "severity": self.severity,
                "name": self.name}


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    resource: Resource
    document: Mapping[str, Any]
    file: str
    line: int
    positions: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)
    """Line and column (1-based) of each value, so later checks can point at a field too."""

    def locate(self, path: Iterable[str | int]) -> tuple[int, int | None]:
        """The position of the value at `path`, or of its nearest located parent."""
        p = tuple(path)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (self.line, None))


@dataclass(slots=True)
class LoadResult:
    documents: list[LoadedDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Every file read (as shown in problems), valid or not: `validate` counts them."""
    skipped: list[str] = field(default_factory=list)
    """`file:line` of documents that are not fleetwave resources (Prometheus rules, a
    Deployment, an Argo Rollout): repositories hold other YAML too, so they are not errors."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: LoadResult) -> None:
        self.documents.extend(other.documents)
        self.problems.extend(other.problems)
        self.files.extend(f for f in other.files if f not in self.files)
        self.skipped.extend(other.skipped)

    def sorted_problems(self) -> list[Problem]:
        """Problems in reading order: by file, then line and column."""
        return sorted(self.problems, key=lambda p: (p.file, p.line or 0, p.column or 0,
                                                    p.field))


def field_path(path: Iterable[str | int]) -> str:
    """`("spec", "strategy", "steps", 2, "percent")` -> `spec.strategy.steps[2].percent`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# -- YAML with positions -------------------------------------------------------


class _Positions:
    """Line/column (1-based) of every value and key in one YAML document."""

    def __init__(self) -> None:
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}

    def locate(self, path: Path_, *, key: bool = False) -> tuple[int, int] | None:
        table = self.keys if key else self.values
        p = tuple(path)
        while True:
            if p in table:
                return table[p]
            if key and p in self.values:
                return self.values[p]
            if not p:
                return None
            p = p[:-1]


def _construct(node: yaml.Node, path: Path_, pos: _Positions) -> Any:
    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct_scalar(key_node)
            child = (*path, key)
            pos.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _construct(value_node, child, pos)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), pos) for i, item in enumerate(node.value)]
    return _construct_scalar(node)


_SAFE = yaml.SafeLoader("")


def _construct_scalar(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _SAFE.construct_object(node, deep=True)
    # A complex key (rare); fall back to the safe constructor.
    return _SAFE.construct_object(node, deep=True)


MAX_FILE_BYTES = 1024 * 1024
"""A Rollout file is a few KiB; a bigger one is refused before it is parsed."""
MAX_DOCUMENTS = 1000
"""Documents in one file: 150,000 empty `---` documents fit in 1 MiB and take seconds."""
MAX_DEPTH = 64
"""Nesting of collections; a Rollout needs about 8. Deeper is refused while composing, so
a 50,000-deep `[[[...]]]` stops after 64 levels instead of exhausting Python's stack."""
_STANDARD_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in (
    "null", "bool", "int", "float", "str", "seq", "map", "timestamp"))


class RefusedYAML(yaml.composer.ComposerError):
    """Valid YAML that fleetwave will not read: anchors and aliases (an alias bomb expands
    a few hundred bytes into gigabytes), tags other than the standard ones (`!!python/...`),
    nesting deeper than MAX_DEPTH."""


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,") \
        else tag


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, at the event that starts it, anything RefusedYAML names.

    The checks sit in `compose_node`, before PyYAML builds (or recurses into) a node, so
    neither an alias's expansion nor a deep nesting is ever built.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        nests = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        self._depth += nests
        try:
            reason = _refusal(event, self._depth)
            if reason is not None:
                raise RefusedYAML(None, None, reason, event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= nests


def _refusal(event: yaml.Event, depth: int) -> str | None:
    """Why the node `event` starts is refused, or None."""
    if isinstance(event, yaml.AliasEvent):
        return (f"alias *{event.anchor} is not allowed (fleetwave files use no anchors or "
                "aliases); write the value out")
    anchor = getattr(event, "anchor", None)
    if anchor is not None:
        return (f"anchor &{anchor} is not allowed (fleetwave files use no anchors or "
                "aliases); write the value out")
    tag = getattr(event, "tag", None)
    if tag is not None and tag != "!" and tag not in _STANDARD_TAGS:
        return (f"tag {_shown_tag(tag)} is not allowed; remove it (only plain strings, "
                "numbers, booleans, lists and maps are read)")
    if depth > MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH} levels is not allowed; flatten the document"
    return None


def _yaml_documents(text: str) -> Iterator[tuple[yaml.Node | None, Exception | None]]:
    loader = _GuardedLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node(), None
    except yaml.YAMLError as exc:
        yield None, exc
    finally:
        loader.dispose()


# -- validation ----------------------------------------------------------------

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

_FORMATS = FormatChecker()


def _is_date_time(value: object) -> bool:
    """RFC 3339 with a zone: the format the CRD's `date-time` demands, so git and cluster agree.

    jsonschema only checks `date-time` with an optional extra package; ours is stricter
    than `datetime.fromisoformat` (which takes a bare date) on purpose.
    """
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    parse_time(value)
    return True


_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


_VALIDATORS = {kind: Draft202012Validator(schema, format_checker=_FORMATS)
               for kind, schema in SCHEMAS.items()}

_PATTERN_HELP = {
    RESOURCE_NAME_PATTERN: "use lower-case letters, digits, '-' and '.', starting and ending "
                           "with a letter or digit, like agent-1-0-6",
    SHA256_PATTERN: "write the 64 lower-case hex digits that `sha256sum` prints",
    DIGEST_PATTERN: "write sha256: and the 64 lower-case hex digits of the image digest, "
                    "like sha256:4f3c…",
    LABEL_NAME_PATTERN: "a label name is letters, digits, '-', '_' and '.', optionally after "
                        "a prefix like example.com/",
}

_JSON_TYPES = {"string": "a string", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "object": "a mapping (key: value)",
               "array": "a list", "null": "null"}


def _yaml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "empty (null)"
    return type(value).__name__


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`; did you mean 'maxInFlight'?` for a near miss (case or a typo), else ``."""
    options = list(options)
    by_lower = {o.lower(): o for o in options}
    if word.lower() in by_lower:
        return f"; did you mean {by_lower[word.lower()]!r}?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(description: str) -> str:
    """A field description's first clause, to quote inside an error message."""
    text = description.split(";", maxsplit=1)[0].strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else text


def _needs_field(error: ValidationError, path: Path_, schema: Schema
                 ) -> tuple[Path_, str, bool]:
    """A field another one requires (`url` needs `sha256`), or one of several required."""
    where = field_path(path) or "the document"
    props = schema.get("properties", {})
    if error.validator == "dependentRequired":
        missing, _, because = error.message.strip("'").partition("' is a dependency of '")
        desc = props.get(missing, {}).get("description", "")
        hint = f" ({_short(desc)})" if desc else ""
        return (*path, missing), (f"missing required field {missing!r} in {where}{hint}: "
                                  f"{because!r} needs it"), False
    options = [r for sub in schema.get("anyOf", ()) for r in sub.get("required", ())]
    if options:
        return path, f"{where} needs one of: {', '.join(options)}", False
    return path, error.message, False


def _describe(error: ValidationError) -> tuple[Path_, str, bool]:
    """Path, message and whether the location is a key rather than a value.

    Every message says what is wrong *and* what would be accepted, so a user can
    fix the file from the message alone.
    """
    path: Path_ = tuple(error.absolute_path)
    v = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    if v == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in value if k not in schema.get("properties", {}))
        if not extra:
            return path, error.message, False
        return (*path, extra[0]), _unknown_field(extra[0], allowed), True
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        desc = schema.get("properties", {}).get(missing, {}).get("description", "")
        where = field_path(path) or "the document"
        hint = f" ({_short(desc)})" if desc else ""
        # Point at the parent's key (`spec:`), where the field has to be added.
        return (*path, missing), f"missing required field {missing!r} in {where}{hint}", False
    if v in ("dependentRequired", "anyOf"):
        return _needs_field(error, path, schema)
    if v == "enum":
        options = ", ".join(str(o) for o in schema.get("enum", []))
        near = did_you_mean(str(value), [str(o) for o in schema.get("enum", [])])
        return path, f"{value!r} is not allowed; use one of: {options}{near}", False
    if v == "type":
        expected = schema.get("type")
        want = _JSON_TYPES.get(str(expected), str(expected))
        msg = f"expected {want}, got {_yaml_type(value)} {value!r}"
        if expected == "string" and isinstance(value, int | float | bool):
            msg += (f"; put it in quotes (\"{value}\") so YAML keeps it as text: unquoted, "
                    "1.10 reads as 1.1 and yes as true")
        elif expected == "integer" and isinstance(value, float):
            msg += "; use a whole number"
        return path, msg, False
    if v == "pattern" and "duration" in schema.get("description", "").lower():
        neg = " (durations cannot be negative)" if str(value).startswith("-") else ""
        return path, (f"{value!r} is not a duration{neg}: write a positive number followed by a "
                      "unit (ms, s, m, h), like 30s, 10m, 4h or 1h30m"), False
    if v == "pattern":
        help_text = _PATTERN_HELP.get(schema.get("pattern", ""),
                                      f"it must match {schema.get('pattern')}")
        return path, f"{value!r} is not valid: {help_text}", False
    if v in ("maximum", "minimum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        side = "above the maximum" if v == "maximum" else "below the minimum"
        limit = high if v == "maximum" else low
        use = f"; use {low} to {high}" if low is not None and high is not None else ""
        what = f" ({_short(schema['description'])})" if schema.get("description") else ""
        return path, f"{value!r} is {side} of {limit}{use}{what}", False
    if v == "format":
        return path, (f"{value!r} is not an RFC 3339 {schema.get('format')}: write the date, "
                      "time and zone, like 2026-12-24T00:00:00Z or 2026-12-24T02:00:00+01:00"
                      ), False
    if v == "minItems":
        return path, "must not be empty: give at least one entry", False
    if v == "minLength":
        return path, "must not be empty", False
    if v == "maxLength":
        return path, f"is longer than {schema.get('maxLength')} characters", False
    return path, error.message, False


def _unknown_field(name: str, allowed: Sequence[str]) -> str:
    near = did_you_mean(name, allowed)
    listing = f" (allowed here: {', '.join(allowed)})" if allowed else ""
    return f"unknown field {name!r}{near or ''}{listing}"


def _semantic_problems(doc: Mapping[str, Any]) -> Iterator[tuple[Path_, str, str]]:
    """Checks a JSON Schema cannot express: (path, message, severity)."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    if doc.get("kind") == "RolloutPolicy":
        template = spec.get("template")
        if isinstance(template, dict):
            yield from _spec_checks(template, ("spec", "template"))
        return
    if doc.get("kind") != "Rollout":
        return
    yield from _spec_checks(spec, ("spec",))


def _spec_checks(spec: Mapping[str, Any], base: Path_) -> Iterator[tuple[Path_, str, str]]:
    strategy = spec.get("strategy", {})
    strategy = strategy if isinstance(strategy, dict) else {}
    steps = strategy.get("steps")
    if isinstance(steps, list) and steps:
        prev = 0
        for i, step in enumerate(steps):
            pct = step.get("percent") if isinstance(step, dict) else None
            if isinstance(pct, int) and not isinstance(pct, bool):
                if pct <= prev and 1 <= pct <= 100:
                    yield ((*base, "strategy", "steps", i, "percent"),
                           f"steps must increase: {pct} comes after {prev}; each percent is the "
                           f"cumulative share of devices, so use a value above {prev} or "
                           "reorder the steps", "error")
                prev = max(prev, pct)
        last = steps[-1].get("percent") if isinstance(steps[-1], dict) else None
        if isinstance(last, int) and last != 100 and 1 <= last <= 100:
            yield ((*base, "strategy", "steps", len(steps) - 1, "percent"),
                   f"the last step must be 100 so that every device is reached, not {last}; "
                   "add `- percent: 100` at the end", "error")
    window = strategy.get("window")
    if isinstance(window, dict):
        cron = window.get("cron")
        if isinstance(cron, str):
            cron_error = _cron_error(cron)
            if cron_error:
                yield ((*base, "strategy", "window", "cron"),
                       f"{cron!r} is not a valid cron expression ({cron_error}); use 5 fields: "
                       "minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) "
                       "day-of-week (0-6), e.g. '0 2 * * *' for 2 AM daily", "error")
        for key in ("timezone", "fallbackTimezone"):
            tz = window.get(key)
            is_device = key == "timezone" and tz == DEVICE_TIMEZONE
            if isinstance(tz, str) and not is_device and not _is_zone(tz):
                near = did_you_mean(tz, _zone_names())
                yield ((*base, "strategy", "window", key),
                       f"{tz!r} is not an IANA time zone; use a name like "
                       "Europe/Berlin, America/New_York or UTC" +
                       (", or 'device' for each device's own timezone label"
                        if key == "timezone" else "") + near, "error")
        duration = window.get("duration")
        if isinstance(duration, str):
            try:
                if parse_duration(duration).total_seconds() <= 0:
                    yield ((*base, "strategy", "window", "duration"),
                           "a window must last longer than 0s", "error")
            except DurationError:
                pass
    yield from _pacing_checks(strategy, (*base, "strategy"))
    yield from _gate_checks(strategy, (*base, "strategy"))
    yield from _hop_checks(strategy, spec.get("version"), (*base, "strategy"))
    yield from _analysis_checks(strategy, (*base, "strategy"))
    for i, freeze in enumerate(strategy.get("freezes", None) or []):
        if isinstance(freeze, dict):
            start, end = freeze.get("start"), freeze.get("end")
            if isinstance(start, str) and isinstance(end, str):
                try:
                    if parse_time(end) <= parse_time(start):
                        yield ((*base, "strategy", "freezes", i, "end"),
                               f"a freeze must end after it starts ({start})", "error")
                except ValueError:
                    pass
    selector = spec.get("selector", {})
    if isinstance(selector, dict):
        for i, expr in enumerate(selector.get("matchExpressions", None) or []):
            if not isinstance(expr, dict):
                continue
            op, values = expr.get("operator"), expr.get("values", [])
            if op in ("In", "NotIn") and not values:
                yield ((*base, "selector", "matchExpressions", i, "values"),
                       f"operator {op} needs at least one value: add values: [...]", "error")
            if op in ("Exists", "DoesNotExist") and values:
                yield ((*base, "selector", "matchExpressions", i, "values"),
                       f"operator {op} takes no values: remove values", "error")
    typed = _selector_or_none(selector)
    exclude = spec.get("exclude", {})
    excluded = exclude.get("devices", []) if isinstance(exclude, dict) else []
    if typed is not None and isinstance(excluded, list):
        for reason in empty_selector_reasons(typed, [str(d) for d in excluded]):
            yield ((*base, *reason.path), reason.message, "warning")


def _gate_checks(strategy: Mapping[str, Any], base: Path_) -> Iterator[tuple[Path_, str, str]]:
    """`gate.webhook.url`: the gate runner POSTs over HTTP, so nothing else may be named
    (a `file:` or `ftp:` URL would only ever fail, keeping the step closed for good)."""
    steps = strategy.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        gate = step.get("gate") if isinstance(step, dict) else None
        webhook = gate.get("webhook") if isinstance(gate, dict) else None
        url = webhook.get("url") if isinstance(webhook, dict) else None
        if not isinstance(url, str) or not url:
            continue
        if not _is_http_url(url):
            yield ((*base, "steps", i, "gate", "webhook", "url"),
                   f"{url[:200]!r} is not an http(s) URL: the gate is asked with an HTTP "
                   "POST; write one like https://gates.example.com/allow", "error")


def _is_http_url(url: str) -> bool:
    """An http:// or https:// URL naming a host: what the gate and analysis runners fetch."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _analysis_checks(strategy: Mapping[str, Any],
                     base: Path_) -> Iterator[tuple[Path_, str, str]]:
    """`analysis.prometheus`: bounds that some value can meet, and an http(s) URL."""
    steps = strategy.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        analysis = step.get("analysis") if isinstance(step, dict) else None
        prom = analysis.get("prometheus") if isinstance(analysis, dict) else None
        if not isinstance(prom, dict):
            continue
        where = (*base, "steps", i, "analysis", "prometheus")
        low, high, url = prom.get("min"), prom.get("max"), prom.get("url")
        if low is None and high is None:
            yield (where, "an analysis needs min, max or both: without bounds no result "
                          "could pass or fail the step", "error")
        if (isinstance(low, int | float) and isinstance(high, int | float)
                and not isinstance(low, bool) and not isinstance(high, bool) and low > high):
            yield ((*where, "max"), f"max {high} is below min {low}: no result could be "
                                    "inside the bounds; swap them", "error")
        if isinstance(url, str) and url and not _is_http_url(url):
            yield ((*where, "url"), f"{url!r} is not an http:// or https:// URL: write the "
                                    "Prometheus server's base URL, e.g. "
                                    "http://prometheus:9090", "error")


def _hop_checks(strategy: Mapping[str, Any], version: Any,
                base: Path_) -> Iterator[tuple[Path_, str, str]]:
    """`requires`: versions that compare, each `via` between its `below` and the target."""
    for i, hop in enumerate(strategy.get("requires", None) or []):
        if not isinstance(hop, dict):
            continue
        below, via = hop.get("below"), hop.get("via")
        for key, value in (("below", below), ("via", via)):
            if isinstance(value, str) and value and version_key(value) is None:
                yield ((*base, "requires", i, key),
                       f"{value!r} is not a version: write one like 2.0.0", "error")
        if not (isinstance(below, str) and isinstance(via, str)):
            continue
        if isinstance(version, str) and compare(via, version) not in (-1, None):
            yield ((*base, "requires", i, "via"),
                   f"via {via!r} is not below the rollout's version {version!r}: an "
                   "intermediate version must come before the target", "error")
        if compare(via, below) == -1:
            yield ((*base, "requires", i, "via"),
                   f"via {via!r} is below `below` {below!r}: a device taken there would "
                   "still be below it; use a via of at least below", "error")


def _pacing_checks(strategy: Mapping[str, Any], base: Path_) -> Iterator[tuple[Path_, str, str]]:
    """Budgets and ramp: combinations the schema cannot refuse on its own."""
    seen: dict[str, int] = {}
    for i, budget in enumerate(strategy.get("budgets", None) or []):
        label = budget.get("groupBy") if isinstance(budget, dict) else None
        if isinstance(label, str) and label:
            if label in seen:
                yield ((*base, "budgets", i, "groupBy"),
                       f"budgets[{seen[label]}] already limits {label!r}: keep one budget "
                       "per label (the smaller maxInFlight is the one that holds)", "error")
            seen.setdefault(label, i)
    ramp = strategy.get("ramp")
    if not isinstance(ramp, dict):
        return
    start, top = ramp.get("startPerMinute"), ramp.get("maxPerMinute")
    if isinstance(start, int) and isinstance(top, int) and start > top:
        yield ((*base, "ramp", "startPerMinute"),
               f"startPerMinute {start} exceeds the ramp's maxPerMinute {top}: the ramp "
               "would start above its ceiling; lower startPerMinute or raise maxPerMinute",
               "error")
    every = ramp.get("every")
    if isinstance(every, str):
        try:
            if parse_duration(every).total_seconds() <= 0:
                yield ((*base, "ramp", "every"), "the ramp must grow after more than 0s",
                       "error")
        except DurationError:
            pass


def _selector_or_none(raw: Any) -> Selector | None:
    """A typed selector when `raw` is well-formed enough to reason about, else None."""
    if not isinstance(raw, dict):
        return None
    labels = raw.get("matchLabels", {})
    exprs = raw.get("matchExpressions", [])
    devices = raw.get("devices", [])
    if not (isinstance(labels, dict) and isinstance(exprs, list) and isinstance(devices, list)):
        return None
    requirements = []
    for e in exprs:
        if not (isinstance(e, dict) and isinstance(e.get("key"), str)
                and e.get("operator") in {o.value for o in Operator}
                and isinstance(e.get("values", []), list)):
            return None
        requirements.append(Requirement(e["key"], Operator(e["operator"]),
                                        tuple(str(v) for v in e.get("values", []))))
    return Selector(match_labels={str(k): str(v) for k, v in labels.items()},
                    match_expressions=tuple(requirements),
                    devices=tuple(str(d) for d in devices))


def _cron_error(expression: str) -> str | None:
    if len(expression.split()) != 5:
        return f"it has {len(expression.split())} fields, not 5"
    try:
        CronSim(expression, datetime(2026, 1, 1))
    except (CronSimError, ValueError, KeyError, IndexError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _zone_names() -> set[str]:
    from zoneinfo import available_timezones
    return available_timezones()


def load_text(text: str, file: str, source: SourceRef | None = None) -> LoadResult:
    """Parse and validate every document in `text`; never raises on bad input."""
    result = LoadResult(files=[file])
    if len(text) > MAX_FILE_BYTES:
        result.problems.append(too_big(file, len(text.encode("utf-8"))))
        return result
    for index, (node, yaml_error) in enumerate(_yaml_documents(text)):
        if index == MAX_DOCUMENTS:
            line = node.start_mark.line + 1 if node is not None else None
            result.problems.append(Problem(file, line, None, "", f"more than {MAX_DOCUMENTS} "
                                           "documents in one file; split it into smaller "
                                           "files"))
            break
        if yaml_error is not None:
            result.problems.append(_yaml_problem(yaml_error, file))
            break
        if node is None:
            continue
        pos = _Positions()
        doc = _construct(node, (), pos)
        if doc is None:
            continue
        line = node.start_mark.line + 1
        if not_ours(doc):
            result.skipped.append(f"{file}:{line}")
            continue
        result.extend(_validate_document(doc, pos, file, line, index, source))
    return result


def too_big(file: str, size: int) -> Problem:
    return Problem(file, None, None, "", f"file is {size} bytes, over the limit of "
                   f"{MAX_FILE_BYTES}; split it into smaller files")


def not_ours(doc: Any) -> bool:
    """Whether a document is plainly some other tool's YAML, to be skipped, not reported.

    Anything that might be a fleetwave resource with a mistake stays ours, so that a
    typo is an error rather than a silently ignored file: an apiVersion that mentions
    fleetwave or is close to ours, or no apiVersion with one of our kinds, a `spec`
    or `metadata`.
    """
    if not isinstance(doc, dict):
        return False
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version is None:
        if kind is not None:
            return not (isinstance(kind, str) and (kind in KINDS or did_you_mean(kind, KINDS)))
        return "spec" not in doc and "metadata" not in doc
    text = str(api_version)
    close = difflib.SequenceMatcher(None, text.lower(), GROUP_VERSION).ratio() >= 0.75
    return "fleetwave" not in text.lower() and not close


def _yaml_problem(error: Exception, file: str) -> Problem:
    """A YAML syntax error, where the parser noticed it and where the broken part began."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    msg = f"invalid YAML: {problem}"
    if context:
        msg += f" ({context}"
        if context_mark is not None and (mark is None or context_mark.line != mark.line):
            msg += f" that starts at line {context_mark.line + 1}, column " \
                   f"{context_mark.column + 1}"
        msg += ")"
    if isinstance(error, RefusedYAML):
        return Problem(file, mark.line + 1 if mark else None,
                       mark.column + 1 if mark else None, "", f"refused YAML: {problem}")
    msg += "; check indentation, quotes and closing brackets"
    if "\t" in problem or "tab" in problem:
        msg += " (YAML does not allow tabs for indentation)"
    return Problem(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None,
                   "", msg)


def _validate_document(doc: Any, pos: _Positions, file: str, line: int, index: int,
                       source: SourceRef | None) -> LoadResult:
    result = LoadResult()

    def add(path: Path_, message: str, severity: str = "error", key: bool = False,
            name: str | None = None) -> None:
        loc = pos.locate(path, key=key)
        result.problems.append(Problem(file, loc[0] if loc else line, loc[1] if loc else None,
                                       field_path(path), message, severity, name))

    if not isinstance(doc, dict):
        add((), f"document {index + 1} is {_yaml_type(doc)}, expected a mapping with "
                f"apiVersion, kind, metadata and spec")
        return result
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != GROUP_VERSION:
        add(("apiVersion",), f"{api_version!r} is not supported; use apiVersion: {GROUP_VERSION}"
            if api_version is not None else f"missing required field 'apiVersion'; add "
            f"apiVersion: {GROUP_VERSION}")
    if kind not in KINDS:
        add(("kind",), f"{kind!r} is not a fleetwave kind{did_you_mean(str(kind), KINDS)} "
                       f"(use one of: {', '.join(KINDS)})"
            if kind is not None else f"missing required field 'kind'; use one of: "
                                     f"{', '.join(KINDS)}")
    if result.problems or not isinstance(kind, str):
        return result
    name = doc.get("metadata", {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    name = name if isinstance(name, str) else None
    seen: set[tuple[Path_, str]] = set()
    for error in _VALIDATORS[kind].iter_errors(doc):
        path, message, is_key = _describe(error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        if error.validator == "required":
            # The field is absent, so point at its parent's key (`spec:`), where it goes.
            parent = path[:-1]
            loc = pos.locate(parent, key=True) if parent else None
            result.problems.append(Problem(file, loc[0] if loc else line,
                                           loc[1] if loc else 1, field_path(path), message,
                                           "error", name))
            continue
        add(path, message, key=is_key, name=name)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            for extra in sorted(str(k) for k in error.instance if k not in props)[1:]:
                add((*tuple(error.absolute_path), extra),
                    _unknown_field(extra, sorted(props)), key=True, name=name)
    for path, message, severity in _semantic_problems(doc):
        if (path, message) not in seen:
            add(path, message, severity, name=name)
    if any(p.severity == "error" for p in result.problems):
        return result
    src = source or SourceRef(kind="folder")
    src = SourceRef(kind=src.kind, revision=src.revision, path=src.path or file, line=line)
    result.documents.append(LoadedDocument(resource_from(doc, src), doc, file, line,
                                           dict(pos.values)))
    return result


def iter_yaml_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, and `.yaml`/`.yml` files under folders, in a stable order.

    Hidden files and folders (`.git`, `.github`) are skipped: they are never rollouts.
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in YAML_SUFFIXES
                              and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            yield p


def load_paths(paths: Iterable[str | os.PathLike[str]], source: SourceRef | None = None,
               *, display_root: str | os.PathLike[str] | None = None) -> LoadResult:
    """Load every YAML file under `paths`, then run cross-file checks (duplicate names)."""
    result = LoadResult()
    for f in iter_yaml_files(paths):
        shown = str(f.relative_to(display_root)) if display_root else str(f)
        try:
            size = f.stat().st_size
            if size > MAX_FILE_BYTES:
                result.files.append(shown)
                result.problems.append(too_big(shown, size))
                continue
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.files.append(shown)
            result.problems.append(Problem(shown, None, None, "", f"cannot read file: {exc}"))
            continue
        result.extend(load_text(text, shown, source))
    result.problems.extend(check_duplicates(result.documents))
    return result


def check_duplicates(documents: list[LoadedDocument]) -> list[Problem]:
    """Two resources of one kind and name in one source: an error at the second, naming the first.

    Neither copy is kept in `documents`: which one the author meant is theirs to say.
    """
    first: dict[tuple[str, str], LoadedDocument] = {}
    problems: list[Problem] = []
    for d in documents:
        key = (type(d.resource).__name__, d.resource.name)
        if key in first:
            other = first[key]
            line, column = d.locate(("metadata", "name"))
            other_line, _ = other.locate(("metadata", "name"))
            problems.append(Problem(
                d.file, line, column, "metadata.name",
                f"duplicate {key[0]} name {key[1]!r}: also defined at {other.file}:{other_line}; "
                "names must be unique per kind in one source, so rename one of them",
                name=key[1]))
        else:
            first[key] = d
    if problems:
        dup_keys = {(p.field, p.name) for p in problems}
        documents[:] = [d for d in documents
                        if ("metadata.name", d.resource.name) not in dup_keys]
    return problems


# -- checks against a fleet snapshot -------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """One device of a fleet snapshot, as `fleetwave devices -o json` prints it."""

    uuid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)


class FleetSnapshotError(ValueError):
    """A fleet snapshot that is not `{"items": [{"uuid": …, "labels": {…}}, …]}`."""


def parse_fleet(data: Any) -> list[FleetDevice]:
    """Read the JSON of `fleetwave devices -o json` (a bare list of devices is accepted too)."""
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise FleetSnapshotError('expected {"items": [{"uuid": ..., "labels": {...}}, ...]}')
    devices = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
            raise FleetSnapshotError(f"items[{i}] has no string uuid")
        labels = item.get("labels") or {}
        versions = item.get("versions") or {}
        if not isinstance(labels, dict) or not isinstance(versions, dict):
            raise FleetSnapshotError(f"items[{i}]: labels and versions must be objects")
        devices.append(FleetDevice(item["uuid"], {str(k): str(v) for k, v in labels.items()},
                                   {str(k): str(v) for k, v in versions.items()}))
    return devices


def check_fleet(documents: Sequence[LoadedDocument],
                fleet: Sequence[FleetDevice]) -> list[Problem]:
    """Warn for each Rollout whose selector matches no device of `fleet`.

    DeviceInventory labels among `documents` are merged over the reported ones
    (inventory wins), as the controller would. A warning, not an error: the devices
    may simply not exist yet.
    """
    inventory: dict[str, dict[str, str]] = {}
    for d in documents:
        if isinstance(d.resource, DeviceInventory):
            for uuid, labels in d.resource.labels.items():
                inventory.setdefault(uuid, {}).update(labels)
    problems = []
    for d in documents:
        if not isinstance(d.resource, Rollout):
            continue
        spec = d.resource.spec
        matched = sum(
            1 for dev in fleet
            if dev.uuid not in spec.exclude
            and selector_matches(spec.selector, {**dev.labels, **inventory.get(dev.uuid, {})},
                                 dev.uuid))
        if matched == 0:
            line, column = d.locate(("spec", "selector"))
            problems.append(Problem(
                d.file, line, column, "spec.selector",
                f"matches none of the {len(fleet)} devices in the fleet snapshot; check the "
                "label names and values against `fleetwave devices`", "warning",
                d.resource.name))
    return problems

