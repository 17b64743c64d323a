"""How every `fleetwave` command prints: `-o table|wide|json|yaml`, data on stdout,
diagnostics on stderr, colour only on a terminal and never with NO_COLOR.

Scripts parse our stdout (`-o json` is one JSON document and nothing else),
people read tables; keeping both rules in one module means a new command
cannot get them subtly wrong.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from typing import IO, Any, TypeVar

import click
import yaml

FORMATS = ("table", "wide", "json", "yaml")
"""Every format a command may offer; each command picks the subset that makes sense."""

F = TypeVar("F", bound=Callable[..., Any])


def output_option(formats: Sequence[str] = ("table", "json", "yaml"),
                  default: str = "table") -> Callable[[F], F]:
    """The `-o/--output` option, the same on every command (kubectl's spelling)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown output formats {sorted(unknown)}")
    return click.option(
        "-o", "--output", "output", type=click.Choice(list(formats)), default=default,
        show_default=True, help="Output format; json and yaml print one document on stdout.",
    )


def use_colour(stream: IO[str] | None = None) -> bool:
    """Colour only on a real terminal, never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def style(text: str, *, stream: IO[str] | None = None, **styles: Any) -> str:
    """`click.style` when `stream` (stdout by default) takes colour, the plain text otherwise."""
    return click.style(text, **styles) if use_colour(stream) else text


SEVERITY_STYLES: dict[str, dict[str, Any]] = {
    "error": {"fg": "red", "bold": True},
    "warning": {"fg": "yellow", "bold": True},
    "ok": {"fg": "green", "bold": True},
}


def diagnostic(message: str, severity: str | None = None) -> None:
    """A line for people on stderr, its severity word coloured when stderr is a terminal."""
    if severity is not None:
        message = f"{style(severity, stream=sys.stderr, **SEVERITY_STYLES.get(severity, {}))}: " \
                  f"{message}"
    click.echo(message, err=True)


def to_jsonable(value: Any) -> Any:
    """Dataclass-free plain data: datetimes as RFC 3339, durations as seconds, enums by value."""
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def render_json(data: Any) -> str:
    return json.dumps(to_jsonable(data), indent=2, sort_keys=False, ensure_ascii=False)


def render_yaml(data: Any) -> str:
    return yaml.safe_dump(to_jsonable(data), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell with a style applied only when colour is on (widths use the plain text)."""

    text: str
    fg: str | None = None
    bold: bool = False


CellValue = str | int | float | Cell | None


def _plain(cell: CellValue) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Cell):
        return cell.text
    if isinstance(cell, float):
        return f"{cell:g}"
    return str(cell)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[CellValue]], *,
                 colour: bool = False) -> str:
    """kubectl-style columns: upper-case headers, two spaces apart, no borders.

    >>> print(render_table(["name", "phase"], [["a", "Completed"], ["bb", None]]))
    NAME  PHASE
    a     Completed
    bb    -
    """
    materialised = [list(r) for r in rows]
    plain = [[_plain(c) for c in r] for r in materialised]
    widths = [len(h) for h in headers]
    for r in plain:
        for i, text in enumerate(r):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for raw, texts in zip(materialised, plain, strict=True):
        cells = []
        for i, (cell, text) in enumerate(zip(raw, texts, strict=True)):
            padded = text.ljust(widths[i]) if i < len(headers) - 1 else text
            if colour and isinstance(cell, Cell) and (cell.fg or cell.bold):
                padded = click.style(text, fg=cell.fg, bold=cell.bold) + padded[len(text):]
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def emit(data: Any, output: str,
         table: Callable[[Any, bool], tuple[Sequence[str], Iterable[Sequence[CellValue]]]]
         | None = None) -> None:
    """Print `data` on stdout in the chosen format.

    `table(data, wide)` returns headers and rows for `table`/`wide`; commands without
    a table view fall back to YAML, which people read well too.
    """
    if output == "json":
        click.echo(render_json(data))
    elif output == "yaml":
        click.echo(render_yaml(data), nl=False)
    elif table is not None:
        headers, rows = table(data, output == "wide")
        click.echo(render_table(headers, rows, colour=use_colour()))
    else:
        click.echo(render_yaml(data), nl=False)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """`plural(1, "file")` -> "1 file"; `plural(3, "file")` -> "3 files"."""
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"
