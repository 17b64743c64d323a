"""`fleetwave validate PATH...`: check Rollout files, for people and for their CI.

Users run this on every pull request, so it reports every problem of every
file in one run, each with file:line:column, the field path and what to write
instead, and exits 0 (valid), 1 (invalid) or 2 (usage error). With `-o json`
stdout carries exactly one JSON document; the human report goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from fleetwave.cli.output import (
    SEVERITY_STYLES,
    diagnostic,
    emit,
    output_option,
    plural,
    style,
)
from fleetwave.resources.loading import (
    YAML_SUFFIXES,
    FleetDevice,
    FleetSnapshotError,
    LoadResult,
    Problem,
    check_fleet,
    iter_yaml_files,
    load_paths,
    parse_fleet,
)


def read_fleet(path: Path) -> list[FleetDevice]:
    """A `fleetwave devices -o json` snapshot (validate --fleet, plan --fleet); bad files are
    usage errors that say how to write a good one."""
    try:
        return parse_fleet(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--fleet") from exc
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path} is not JSON ({exc}); write it with "
                                 "`fleetwave devices -o json > fleet.json`",
                                 param_hint="--fleet") from exc
    except FleetSnapshotError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--fleet") from exc


def _empty_folder_warnings(paths: Sequence[Path]) -> list[Problem]:
    """A folder without any YAML is usually a wrong path in a CI job: say so, but do not fail."""
    return [
        Problem(str(p), None, None, "",
                f"no {' or '.join(YAML_SUFFIXES)} files in this folder; is the path right?",
                "warning")
        for p in paths if p.is_dir() and next(iter_yaml_files([p]), None) is None
    ]


class _SourceLines:
    """Reads each file once, to quote the offending line under its error."""

    def __init__(self) -> None:
        self._cache: dict[str, list[str]] = {}

    def line(self, file: str, number: int) -> str | None:
        if file not in self._cache:
            try:
                self._cache[file] = Path(file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                self._cache[file] = []
        lines = self._cache[file]
        return lines[number - 1] if 0 < number <= len(lines) else None


def _report(problems: Sequence[Problem]) -> None:
    """Compiler-style lines on stderr, each followed by the source line and a caret."""
    sources = _SourceLines()
    for p in problems:
        word = style(p.severity, stream=sys.stderr, **SEVERITY_STYLES.get(p.severity, {}))
        where = p.file + "".join(f":{n}" for n in (p.line, p.column) if n is not None)
        field = f" {style(p.field, stream=sys.stderr, bold=True)}:" if p.field else ""
        click.echo(f"{where}: {word}:{field} {p.message}", err=True)
        text = sources.line(p.file, p.line) if p.line is not None else None
        if text is not None and text.strip():
            gutter = f"{p.line:>5} | "
            click.echo(f"{gutter}{text}", err=True)
            if p.column is not None:
                click.echo(" " * (len(gutter) - 2) + "| " + " " * (p.column - 1) + "^",
                           err=True)


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("--fleet", "fleet_file", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
              help="A fleet snapshot (`fleetwave devices -o json`): warn about selectors "
                   "that match none of its devices.")
@output_option(("table", "json", "yaml"))
def validate(paths: tuple[Path, ...], strict: bool, fleet_file: Path | None,
             output: str) -> None:
    """Check Rollout, RolloutPolicy and DeviceInventory files.

    PATHS are files or folders (searched recursively for .yaml and .yml files;
    hidden folders are skipped). Every problem of every file is reported: on
    stderr for people, or as one JSON/YAML document on stdout with -o json/yaml.

    Exit status: 0 when every file is valid, 1 when any is not (or, with
    --strict, has a warning), 2 on a usage error.
    """
    if not paths:
        raise click.UsageError("give at least one file or folder, e.g. "
                               "`fleetwave validate rollouts/`")
    fleet = read_fleet(fleet_file) if fleet_file is not None else None
    result: LoadResult = load_paths(paths)
    result.problems.extend(_empty_folder_warnings(paths))
    if fleet is not None:
        result.problems.extend(check_fleet(result.documents, fleet))
    problems = result.sorted_problems()
    errors, warnings = len(result.errors), len(result.warnings)
    failed = errors > 0 or (strict and warnings > 0)
    summary = (f"{plural(len(result.files), 'file')}, "
               f"{plural(len(result.documents), 'valid resource')}, "
               f"{plural(errors, 'error')}, {plural(warnings, 'warning')}")
    if result.skipped:
        summary += (f" ({plural(len(result.skipped), 'document')} skipped: not a fleetwave "
                    "resource)")
    if output == "table":
        _report(problems)
        verdict = ("error", "invalid") if failed else ("ok", "valid")
        diagnostic(f"{summary}: "
                   f"{style(verdict[1], stream=sys.stderr, **SEVERITY_STYLES[verdict[0]])}"
                   + (" (--strict: warnings fail)" if strict and warnings and not errors
                      else ""))
    else:
        emit({"valid": not failed, "files": len(result.files),
              "resources": len(result.documents), "errors": errors, "warnings": warnings,
              "problems": [p.as_json() for p in problems], "skipped": result.skipped}, output)
        diagnostic(summary)
    sys.exit(1 if failed else 0)
