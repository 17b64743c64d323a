"""`fleetwave plan PATH...`: which devices each wave of a changed Rollout would touch, and when.

Run on a pull request, before the change reaches the controller: against an exported
fleet snapshot (`fleetwave devices -o json > fleet.json`, no credentials in CI) or the
live fleet through the API. The computation is `fleetwave.planner.preview`, built
from the planner's own functions; this module only reads inputs and prints. Output:
a table for people, `-o json` for scripts, `-o markdown` for a pull-request comment.
Exit status 0 ok, 1 invalid files or unreachable server, 2 usage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from fleetwave.cli.client import DEFAULT_SERVER, Client
from fleetwave.cli.output import (
    CellValue,
    diagnostic,
    emit,
    plural,
    render_table,
    use_colour,
)
from fleetwave.cli.validate import read_fleet
from fleetwave.planner.model import DeviceView
from fleetwave.planner.preview import (
    DEFAULT_GROUP_BY,
    FleetPreview,
    RolloutPreview,
    apply_inventory,
    preview,
    rfc3339,
)
from fleetwave.resources.durations import format_duration
from fleetwave.resources.loading import FleetSnapshotError, load_paths, parse_fleet
from fleetwave.resources.model import (
    DeviceInventory,
    Rollout,
    SourceRef,
    parse_time,
    resource_from,
)

FORMATS = ("table", "json", "yaml", "markdown")
MARKDOWN_LABEL_VALUES = 6
"""Label values shown per cell in Markdown before "+N more": a comment stays readable."""


def _fleet_from(data: Any, where: str) -> list[DeviceView]:
    try:
        devices = parse_fleet(data)
    except FleetSnapshotError as exc:
        raise click.BadParameter(f"{where}: {exc}", param_hint="--fleet") from exc
    return [DeviceView(uuid=d.uuid, versions=dict(d.versions), labels=dict(d.labels))
            for d in devices]


def _read_snapshot(path: Path) -> list[DeviceView]:
    return [DeviceView(uuid=d.uuid, versions=dict(d.versions), labels=dict(d.labels))
            for d in read_fleet(path)]


def _live_rollouts(items: Any) -> list[Rollout]:
    """The controller's rollouts, for conflicts; one it cannot describe is skipped, said."""
    out: list[Rollout] = []
    for item in items if isinstance(items, list) else []:
        try:
            source = item.get("source") or {}
            resource = resource_from(
                {"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
                 "metadata": {"name": item["name"]}, "spec": item["spec"]},
                SourceRef(kind=str(source.get("kind") or "folder")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            diagnostic(f"live rollout {item!r:.60} skipped for conflicts: {exc}", "warning")
            continue
        if isinstance(resource, Rollout):
            out.append(resource)
    return out


def _when(t: float | None) -> str:
    return rfc3339(t) or "never"


def _pause(seconds: float | None) -> str | None:
    return format_duration(timedelta(seconds=seconds)) if seconds else None


def _counts(values: dict[str, int], limit: int | None = None) -> str:
    items = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = items if limit is None else items[:limit]
    text = ", ".join(f"{k}: {v}" for k, v in shown)
    if limit is not None and len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text or "-"


def _summary(r: RolloutPreview) -> list[tuple[str, str]]:
    rows = [("targeted", str(r.targeted)), ("to update", str(r.to_update)),
            (f"already at {r.version}", str(r.up_to_date)),
            ("excluded", str(len(r.excluded)))]
    conflicted = str(len(r.conflicted))
    if r.conflicts_with:
        conflicted += f" (with {', '.join(r.conflicts_with)})"
    rows.append(("conflicted", conflicted))
    if r.overridden:
        rows.append(("left to an API update", str(len(r.overridden))))
    if r.unassigned:
        rows.append(("past the last step", str(r.unassigned)))
    rows.append(("rollout starts", _when(r.starts_at)))
    return rows


def render_text(result: FleetPreview) -> str:
    """Tables for people: one summary and one wave table per rollout."""
    colour = use_colour()
    out = [f"now {_when(result.now)}; fleet of {plural(result.devices, 'device')}"]
    for r in result.rollouts:
        title = f"Rollout {r.name}: {r.component} -> {r.version}"
        out += ["", click.style(title, bold=True) if colour else title]
        if r.file:
            out.append(f"  from {r.file}")
        if r.error:
            out.append(f"  error: {r.error} (the controller would mark it Failed)")
        out += [f"  {k}: {v}" for k, v in _summary(r)]
        headers = ["wave", "percent", "devices", *result.group_by, "earliest start",
                   "50% sent", "sending done", "pause after"]
        rows: list[list[CellValue]] = [[str(w.step), f"{w.percent}%", len(w.devices),
                 *(_counts(dict(w.by_label[label])) for label in result.group_by),
                 _when(w.first_send) if w.devices else "-",
                 _when(w.half_sent) if w.devices else "-",
                 _when(w.sending_done) if w.devices else "-",
                 _pause(w.pause_after) or "-"]
                for w in r.waves]
        out += ["", render_table(headers, rows, colour=colour)]
        out += [f"  note: {n}" for n in r.notes]
    out += ["", "Times are the earliest possible: " + "; ".join(result.assumptions) + "."]
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(result: FleetPreview) -> str:
    """A pull-request comment: a table per rollout, device lists folded in <details>."""
    out = ["## fleetwave plan", "",
           f"Fleet of {plural(result.devices, 'device')} at {_when(result.now)}. "
           "Times are the earliest possible (UTC): " + "; ".join(result.assumptions) + "."]
    for r in result.rollouts:
        out += ["", f"### `{r.name}`: {r.component} → {r.version}"]
        if r.file:
            out += ["", f"From `{r.file}`."]
        if r.error:
            out += ["", f"> **Error:** {_md(r.error)} (the controller would mark it Failed)"]
        out += ["", "| " + " | ".join(k for k, _ in _summary(r)) + " |",
                "|" + "---:|" * len(_summary(r)),
                "| " + " | ".join(_md(v) for _, v in _summary(r)) + " |", ""]
        headers = ["Wave", "%", "Devices", *(f"`{g}`" for g in result.group_by),
                   "Earliest start", "50 % sent", "Sending done", "Pause after"]
        out += ["| " + " | ".join(headers) + " |",
                "|" + "|".join("---:" if i < 3 else "---" for i in range(len(headers))) + "|"]
        for w in r.waves:
            cells = [str(w.step), f"{w.percent}", str(len(w.devices)),
                     *(_md(_counts(dict(w.by_label[g]), MARKDOWN_LABEL_VALUES))
                       for g in result.group_by),
                     _when(w.first_send) if w.devices else "–",
                     _when(w.half_sent) if w.devices else "–",
                     _when(w.sending_done) if w.devices else "–",
                     _pause(w.pause_after) or "–"]
            out.append("| " + " | ".join(cells) + " |")
        if r.notes:
            out += [""] + [f"- {_md(n)}" for n in r.notes]
        out += ["", f"<details><summary>Devices per wave ({r.to_update} to update)</summary>",
                ""]
        for w in r.waves:
            listed = ", ".join(f"`{u}`" for u in w.devices) or "none"
            out += [f"**Wave {w.step}** ({len(w.devices)}): {listed}", ""]
        if r.excluded:
            out += [f"**Excluded** ({len(r.excluded)}): "
                    + ", ".join(f"`{u}`" for u in r.excluded), ""]
        if r.conflicted:
            out += [f"**Conflicted** ({len(r.conflicted)}, with "
                    f"{', '.join(f'`{n}`' for n in r.conflicts_with)}): "
                    + ", ".join(f"`{u}`" for u in r.conflicted), ""]
        out.append("</details>")
    return "\n".join(out) + "\n"


def _rollouts_from(paths: Sequence[Path]) -> tuple[list[Rollout], list[DeviceInventory],
                                                      dict[str, str]]:
    result = load_paths(paths)
    if not result.ok:
        for p in result.sorted_problems():
            click.echo(str(p), err=True)
        diagnostic(f"{plural(len(result.errors), 'error')} in "
                   f"{plural(len(result.files), 'file')}; fix them (see `fleetwave validate`)",
                   "error")
        sys.exit(1)
    rollouts = [d.resource for d in result.documents if isinstance(d.resource, Rollout)]
    inventories = [d.resource for d in result.documents
                   if isinstance(d.resource, DeviceInventory)]
    files = {d.resource.name: f"{d.file}:{d.line}" for d in result.documents
             if isinstance(d.resource, Rollout)}
    if not rollouts:
        diagnostic(f"no Rollout in {', '.join(map(str, paths))}: nothing to plan", "error")
        sys.exit(1)
    return rollouts, inventories, files


@click.command("plan")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--fleet", "fleet_file", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
              help="A fleet snapshot (`fleetwave devices -o json`) instead of the live fleet.")
@click.option("--server", envvar="FLEETWAVE_SERVER", default=None, show_envvar=True,
              help=f"URL of the fleetwave API for the live fleet [default: {DEFAULT_SERVER}].")
@click.option("--now", "now_text", metavar="RFC3339",
              help="Plan as of this time (e.g. 2026-03-28T12:00:00Z); default: the clock.")
@click.option("--by", "group_by", multiple=True, metavar="LABEL",
              help="Count each wave's devices per value of this label (repeatable; "
                   f"default: {', '.join(DEFAULT_GROUP_BY)}).")
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table",
              show_default=True, help="markdown: a summary for a pull-request comment.")
def plan(paths: tuple[Path, ...], fleet_file: Path | None, server: str | None,
         now_text: str | None, group_by: tuple[str, ...], output: str) -> None:
    """Preview which devices each wave of the Rollouts in PATHS would touch, and when.

    PATHS are Rollout files or folders (DeviceInventory files among them apply their
    labels). For each Rollout: devices targeted, excluded, conflicted (and with which
    rollouts), already at the version; for each wave its devices, counts per label
    value and the earliest time it can start given notBefore, windows (per device
    time zone too), freezes and maxPerMinute. The same input gives the same output.
    """
    if not paths:
        raise click.UsageError("give at least one Rollout file or folder, e.g. "
                               "`fleetwave plan rollouts/ --fleet fleet.json`")
    if fleet_file is not None and server is not None:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("server") == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("give --fleet or --server, not both")
    if now_text is not None:
        try:
            now = parse_time(now_text).timestamp()
        except ValueError as exc:
            raise click.BadParameter(f"{now_text!r} is not an RFC 3339 time ({exc})",
                                     param_hint="--now") from exc
    else:
        now = time.time()
    rollouts, inventories, files = _rollouts_from(paths)
    others: list[Rollout] = []
    if fleet_file is not None:
        devices = _read_snapshot(fleet_file)
    else:
        client = Client(server or DEFAULT_SERVER)
        devices = _fleet_from(client.get_all("/api/v1/devices"), f"{client.server}/api/v1/devices")
        listed = client.get("/api/v1/rollouts")
        others = _live_rollouts(listed.get("items") if isinstance(listed, dict) else None)
    devices = apply_inventory(devices, inventories)
    result = preview(rollouts, devices, now, others=others,
                     group_by=group_by or DEFAULT_GROUP_BY, files=files)
    if now_text is None:
        diagnostic(f"planned as of now, {rfc3339(now)} (pass --now for a repeatable plan)")
    if output in ("json", "yaml"):
        emit(result.to_dict(), output)
    elif output == "markdown":
        click.echo(render_markdown(result), nl=False)
    else:
        click.echo(render_text(result))
