"""YAML text to validated resources, with every problem located by file, line and field.

Users run `fleetwave validate` in their CI on each pull request, so an error
must be enough to fix the file: where (file:line:column), which field
(`spec.strategy.steps[2].percent`) and what is accepted. All problems of a file
are collected in one pass; nothing stops at the first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
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
from fleetwave.resources.durations import DurationError, parse_duration
from fleetwave.resources.model import (
    DEVICE_TIMEZONE,
    Resource,
    SourceRef,
    resource_from,
)
from fleetwave.resources.schema import KINDS, SCHEMAS

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


@dataclass(slots=True)
class LoadResult:
    documents: list[LoadedDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

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


def _yaml_documents(text: str) -> Iterator[tuple[yaml.Node | None, Exception | None]]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node(), None
    except yaml.YAMLError as exc:
        yield None, exc
    finally:
        loader.dispose()


# -- validation ----------------------------------------------------------------

_VALIDATORS = {kind: Draft202012Validator(schema, format_checker=FormatChecker())
               for kind, schema in SCHEMAS.items()}


def _describe(error: ValidationError) -> tuple[Path_, str, bool]:
    """Path, message and whether the location is a key rather than a value."""
    path: Path_ = tuple(error.absolute_path)
    v = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    if v == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in value if k not in schema.get("properties", {}))
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return (*path, extra[0]) if extra else path, (
            f"unknown field {extra[0]!r}{hint}" if extra else error.message), True
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        desc = schema.get("properties", {}).get(missing, {}).get("description", "")
        return (*path, missing), f"required field is missing{': ' + desc if desc else ''}", False
    if v == "enum":
        options = ", ".join(str(o) for o in schema.get("enum", []))
        return path, f"{value!r} is not allowed; use one of: {options}", False
    if v == "type":
        return path, f"{value!r} is not of type {schema.get('type')}", False
    if v == "pattern" and "duration" in schema.get("description", "").lower():
        return path, (f"{value!r} is not a duration: write a positive number followed by a "
                      "unit (ms, s, m, h), like 30s, 10m, 4h or 1h30m"), False
    if v == "pattern":
        return path, f"{value!r} does not match the pattern {schema.get('pattern')}", False
    if v == "maximum":
        return path, f"{value!r} is above the maximum of {schema.get('maximum')}", False
    if v == "minimum":
        return path, f"{value!r} is below the minimum of {schema.get('minimum')}", False
    if v == "format":
        return path, (f"{value!r} is not a valid {schema.get('format')}; "
                      "write it like 2026-12-24T00:00:00Z"), False
    if v == "minItems":
        return path, "must not be empty", False
    if v == "minLength":
        return path, "must not be empty", False
    return path, error.message, False


def _semantic_problems(doc: Mapping[str, Any]) -> Iterator[tuple[Path_, str, str]]:
    """Checks a JSON Schema cannot express: (path, message, severity)."""
    if doc.get("kind") == "RolloutPolicy":
        yield from _spec_checks(doc.get("spec", {}).get("template", {}), ("spec", "template"))
        return
    if doc.get("kind") != "Rollout":
        return
    yield from _spec_checks(doc.get("spec", {}), ("spec",))


def _spec_checks(spec: Mapping[str, Any], base: Path_) -> Iterator[tuple[Path_, str, str]]:
    strategy = spec.get("strategy", {})
    steps = strategy.get("steps")
    if isinstance(steps, list) and steps:
        prev = 0
        for i, step in enumerate(steps):
            pct = step.get("percent") if isinstance(step, dict) else None
            if isinstance(pct, int) and not isinstance(pct, bool):
                if pct <= prev and 1 <= pct <= 100:
                    yield ((*base, "strategy", "steps", i, "percent"),
                           f"steps must increase: {pct} follows {prev}; each step's percent is "
                           "the cumulative share of devices", "error")
                prev = max(prev, pct)
        last = steps[-1].get("percent") if isinstance(steps[-1], dict) else None
        if isinstance(last, int) and last != 100 and 1 <= last <= 100:
            yield ((*base, "strategy", "steps", len(steps) - 1, "percent"),
                   f"the last step must be 100 so that every device is reached, not {last}",
                   "error")
    window = strategy.get("window")
    if isinstance(window, dict):
        cron = window.get("cron")
        if isinstance(cron, str):
            try:
                CronSim(cron, datetime(2026, 1, 1))
            except (CronSimError, ValueError, KeyError, IndexError) as exc:
                yield ((*base, "strategy", "window", "cron"),
                       f"{cron!r} is not a valid cron expression ({exc}); use 5 fields: "
                       "minute hour day-of-month month day-of-week, e.g. '0 2 * * *'", "error")
        for key in ("timezone", "fallbackTimezone"):
            tz = window.get(key)
            is_device = key == "timezone" and tz == DEVICE_TIMEZONE
            if isinstance(tz, str) and not is_device and not _is_zone(tz):
                yield ((*base, "strategy", "window", key),
                       f"{tz!r} is not an IANA time zone; use a name like Europe/Berlin, "
                       "America/New_York or UTC" +
                       (", or 'device'" if key == "timezone" else ""), "error")
        duration = window.get("duration")
        if isinstance(duration, str):
            try:
                if parse_duration(duration).total_seconds() <= 0:
                    yield ((*base, "strategy", "window", "duration"),
                           "a window must last longer than 0s", "error")
            except DurationError:
                pass
    for i, freeze in enumerate(strategy.get("freezes", []) or []):
        if isinstance(freeze, dict):
            start, end = freeze.get("start"), freeze.get("end")
            if isinstance(start, str) and isinstance(end, str):
                try:
                    from fleetwave.resources.model import parse_time
                    if parse_time(end) <= parse_time(start):
                        yield ((*base, "strategy", "freezes", i, "end"),
                               "a freeze must end after it starts", "error")
                except ValueError:
                    pass
    selector = spec.get("selector", {})
    if isinstance(selector, dict):
        for i, expr in enumerate(selector.get("matchExpressions", []) or []):
            if not isinstance(expr, dict):
                continue
            op, values = expr.get("operator"), expr.get("values", [])
            if op in ("In", "NotIn") and not values:
                yield ((*base, "selector", "matchExpressions", i, "values"),
                       f"operator {op} needs at least one value", "error")
            if op in ("Exists", "DoesNotExist") and values:
                yield ((*base, "selector", "matchExpressions", i, "values"),
                       f"operator {op} takes no values", "error")


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def load_text(text: str, file: str, source: SourceRef | None = None) -> LoadResult:
    """Parse and validate every document in `text`; never raises on bad input."""
    result = LoadResult()
    for index, (node, yaml_error) in enumerate(_yaml_documents(text)):
        if yaml_error is not None:
            mark = getattr(yaml_error, "problem_mark", None)
            problem = getattr(yaml_error, "problem", None) or str(yaml_error)
            context = getattr(yaml_error, "context", None)
            msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
            result.problems.append(Problem(
                file, mark.line + 1 if mark else None, mark.column + 1 if mark else None,
                "", msg))
            break
        if node is None:
            continue
        pos = _Positions()
        doc = _construct(node, (), pos)
        if doc is None:
            continue
        line = node.start_mark.line + 1
        result.extend(_validate_document(doc, pos, file, line, index, source))
    return result


def _validate_document(doc: Any, pos: _Positions, file: str, line: int, index: int,
                       source: SourceRef | None) -> LoadResult:
    result = LoadResult()

    def add(path: Path_, message: str, severity: str = "error", key: bool = False,
            name: str | None = None) -> None:
        loc = pos.locate(path, key=key)
        result.problems.append(Problem(file, loc[0] if loc else line, loc[1] if loc else None,
                                       field_path(path), message, severity, name))

    if not isinstance(doc, dict):
        add((), f"document {index + 1} is a {type(doc).__name__}, expected a mapping with "
                f"apiVersion, kind, metadata and spec")
        return result
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != GROUP_VERSION:
        add(("apiVersion",), f"{api_version!r} is not supported; use apiVersion: {GROUP_VERSION}"
            if api_version is not None else f"required field is missing; use apiVersion: "
            f"{GROUP_VERSION}")
    if kind not in KINDS:
        add(("kind",), f"{kind!r} is not a fleetwave kind; use one of: {', '.join(KINDS)}"
            if kind is not None else f"required field is missing; use one of: {', '.join(KINDS)}")
    if result.problems or not isinstance(kind, str):
        return result
    name = doc.get("metadata", {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    name = name if isinstance(name, str) else None
    seen: set[tuple[Path_, str]] = set()
    for error in sorted(_VALIDATORS[kind].iter_errors(doc), key=lambda e: list(map(str, e.path))):
        path, message, is_key = _describe(error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        add(path, message, key=is_key, name=name)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            allowed = ", ".join(sorted(props))
            for extra in sorted(str(k) for k in error.instance if k not in props)[1:]:
                add((*tuple(error.absolute_path), extra),
                    f"unknown field {extra!r}; allowed here: {allowed}", key=True, name=name)
    for path, message, severity in _semantic_problems(doc):
        add(path, message, severity, name=name)
    if any(p.severity == "error" for p in result.problems):
        return result
    src = source or SourceRef(kind="folder")
    src = SourceRef(kind=src.kind, revision=src.revision, path=src.path or file, line=line)
    result.documents.append(LoadedDocument(resource_from(doc, src), doc, file, line))
    return result


def iter_yaml_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, and `.yaml`/`.yml` files under folders, in a stable order."""
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
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(shown, None, None, "", f"cannot read file: {exc}"))
            continue
        result.extend(load_text(text, shown, source))
    result.problems.extend(check_duplicates(result.documents))
    return result


def check_duplicates(documents: list[LoadedDocument]) -> list[Problem]:
    """Two resources of one kind and name in one source: both places are reported."""
    first: dict[tuple[str, str], LoadedDocument] = {}
    problems: list[Problem] = []
    for d in documents:
        key = (type(d.resource).__name__, d.resource.name)
        if key in first:
            other = first[key]
            problems.append(Problem(
                d.file, d.line, None, "metadata.name",
                f"duplicate {key[0]} name {key[1]!r}: also defined at {other.file}:{other.line}; "
                "names must be unique in one source", name=key[1]))
        else:
            first[key] = d
    if problems:
        # Neither copy is trusted: which one the author meant is theirs to say.
        dup_keys = {(p.field, p.name) for p in problems}
        documents[:] = [d for d in documents
                        if ("metadata.name", d.resource.name) not in dup_keys]
    return problems
