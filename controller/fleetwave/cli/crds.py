"""`fleetwave crds`: write (or check) the CustomResourceDefinitions in `crds/`.

The files are generated from the package's schemas; `--check` lets CI fail
when someone changed a schema and forgot to regenerate them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleetwave.cli.output import diagnostic, plural
from fleetwave.resources.crds import render_crds


@click.command("crds")
@click.option("--output-dir", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("crds"), show_default=True,
              help="Folder to write one <plural>.fleetwave.io.yaml per kind into.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 when the folder differs from what would be written.")
@click.option("--stdout", "to_stdout", is_flag=True,
              help="Print all CRDs as one multi-document YAML stream instead of writing files.")
def crds(output_dir: Path, check: bool, to_stdout: bool) -> None:
    """Write the CustomResourceDefinitions of Rollout, RolloutPolicy and DeviceInventory."""
    rendered = render_crds()
    if to_stdout:
        click.echo("---\n".join(rendered.values()), nl=False)
        return
    if check:
        stale = [name for name, text in rendered.items()
                 if _read(output_dir / name) != text]
        if stale:
            for name in stale:
                state = "missing" if not (output_dir / name).exists() else "out of date"
                diagnostic(f"{output_dir / name} is {state}", "error")
            diagnostic(f"run `fleetwave crds --output-dir {output_dir}` and commit the result")
            sys.exit(1)
        diagnostic(f"{output_dir}: {plural(len(rendered), 'CRD')} up to date")
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        path = output_dir / name
        if _read(path) != text:
            path.write_text(text, encoding="utf-8")
            diagnostic(f"wrote {path}")
    diagnostic(f"{output_dir}: {plural(len(rendered), 'CRD')} up to date")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
