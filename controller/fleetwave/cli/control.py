"""The commands people and scripts use against a running controller: `status`, `devices`,
`history`, and `pause|resume|promote|abort|rollback`.

They only speak the HTTP API (never the store), so they work the same against
`run`, `operator` and `demo`, locally or through a port-forward. Output follows
fleetwave.cli.output: tables for people, `-o json|yaml` as one document for
scripts. `status --watch` behaves like the argo-rollouts kubectl plugin: it
returns when every shown rollout has finished, 0 when all completed, 1 when
one failed, was aborted or rolled back, or when `--timeout` passes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from fleetwave.cli.client import DEFAULT_SERVER, Client, ClientError
from fleetwave.cli.output import (
    Cell,
    CellValue,
    diagnostic,
    emit,
    output_option,
    render_table,
    use_colour,
)
from fleetwave.resources.durations import DurationError, parse_duration
from fleetwave.resources.vocabulary import BAD_ENDINGS, TERMINAL_PHASES, ControlOp, Phase

PHASE_COLOURS = {Phase.COMPLETED: "green", Phase.PROGRESSING: "cyan", Phase.PAUSED: "yellow",
                 Phase.WAITING: "yellow", Phase.FAILED: "red", Phase.ABORTED: "red",
                 Phase.ROLLED_BACK: "red", Phase.PENDING: None, Phase.DELETED: None}
DEFAULT_STEPS = 4
BAR_WIDTH = 12
WATCH_INTERVAL = 1.0
"""Seconds between refreshes of `status --watch`."""


def _server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--token", envvar="FLEETWAVE_TOKEN", default=None, show_envvar=True,
                        help="Bearer token for control commands (and reads where the server "
                             "has --read-token-file); prefer the environment variable, "
                             "command lines are visible to other users.")(func)
    return click.option("--server", envvar="FLEETWAVE_SERVER", default=DEFAULT_SERVER,
                        show_default=True, show_envvar=True,
                        help="URL of the fleetwave API.")(func)


def _q(segment: str) -> str:
    return quote(segment, safe="")


# ---- formatting ----------------------------------------------------------------------------

def _age(rollout: dict[str, Any], now: datetime) -> str:
    """Since creation when known, else since the oldest condition transition (kubectl's AGE)."""
    status = rollout.get("status") or {}
    stamps: list[str] = [s for s in (rollout.get("createdAt"), status.get("createdAt"))
                         if isinstance(s, str)]
    if not stamps:
        stamps = [c["lastTransitionTime"] for c in status.get("conditions") or []
                  if isinstance(c, dict) and isinstance(c.get("lastTransitionTime"), str)]
    times = []
    for stamp in stamps:
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            continue
        times.append(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    if not times:
        return "-"
    seconds = max(0, int((now - min(times)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _progress(status: dict[str, Any]) -> tuple[int, int]:
    """(done, targeted) from the status's typed fields (`progress` is only for printers)."""
    done, targeted = status.get("done"), status.get("targeted")
    return (done if isinstance(done, int) else 0), (targeted if isinstance(targeted, int)
                                                    else 0)


def progress_bar(done: int, total: int, *, fancy: bool, width: int = BAR_WIDTH) -> str:
    """`[#####-------] 40/100`; block characters on a colour terminal.

    >>> progress_bar(1, 4, fancy=False, width=4)
    '[#---] 1/4'
    """
    filled = round(width * done / total) if total else 0
    full, empty = ("█", "░") if fancy else ("#", "-")
    bar = full * filled + empty * (width - filled)
    return f"{bar} {done}/{total}" if fancy else f"[{bar}] {done}/{total}"


def _step(rollout: dict[str, Any]) -> str:
    status = rollout.get("status") or {}
    steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("steps")
    total = len(steps) if isinstance(steps, list) and steps else DEFAULT_STEPS
    current = status.get("currentStep")
    if not isinstance(current, int):
        return f"-/{total}"
    return f"{min(current + 1, total)}/{total}"


def rollout_rows(rollouts: Iterable[dict[str, Any]], wide: bool, *,
                 fancy: bool = False) -> tuple[list[str], list[list[CellValue]]]:
    headers = ["name", "component", "version", "phase", "step", "progress", "failures", "age"]
    if wide:
        headers += ["source", "revision", "message"]
    now = datetime.now(UTC)
    rows: list[list[CellValue]] = []
    for r in rollouts:
        spec = r.get("spec") or {}
        status = r.get("status") or {}
        phase = str(status.get("phase") or Phase.PENDING)
        done, total = _progress(status)
        rate = status.get("failureRate")
        failures = f"{float(rate):.1f}%" if isinstance(rate, int | float) else "-"
        row: list[CellValue] = [
            r.get("name"), spec.get("component"), spec.get("version"),
            Cell(phase, fg=PHASE_COLOURS.get(phase), bold=phase in BAD_ENDINGS),
            _step(r), progress_bar(done, total, fancy=fancy), failures, _age(r, now),
        ]
        if wide:
            source = r.get("source") or {}
            revision = source.get("revision") or status.get("revision")
            row += [source.get("kind"), str(revision)[:12] if revision else None,
                    status.get("message")]
        rows.append(row)
    return headers, rows


def _rollout_table(data: Any, wide: bool) -> tuple[Sequence[str], Iterable[Sequence[CellValue]]]:
    items = data["items"] if isinstance(data, dict) and "items" in data else [data]
    return rollout_rows(items, wide, fancy=use_colour())


def _devices_table(data: Any, wide: bool) -> tuple[Sequence[str], Iterable[Sequence[CellValue]]]:
    headers = ["uuid", "online", "versions", "last seen"]
    if wide:
        headers += ["type", "ip", "labels"]
    rows: list[list[CellValue]] = []
    for d in data["items"]:
        online = d.get("online")
        versions = d.get("versions") or {}
        row: list[CellValue] = [
            d.get("uuid"),
            None if online is None else Cell("yes" if online else "no",
                                             fg="green" if online else "red"),
            ",".join(f"{k}={v}" for k, v in sorted(versions.items())) or None,
            d.get("lastSeen") or d.get("timestamp"),
        ]
        if wide:
            labels = d.get("labels") or {}
            row += [d.get("deployment_type") or d.get("deploymentType"), d.get("ip"),
                    ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None]
        rows.append(row)
    return headers, rows


STATE_COLOURS = {"succeeded": "green", "failed": "red", "timeout": "red", "cancelled": "yellow",
                 "rolled_back": "yellow"}


def _history_table(data: Any, wide: bool) -> tuple[Sequence[str], Iterable[Sequence[CellValue]]]:
    headers = ["id", "rollout", "component", "from", "to", "state", "attempt", "created",
               "reason"]
    if wide:
        headers += ["completed", "triggered by", "correlation id", "exit code", "error"]
    rows: list[list[CellValue]] = []
    for u in data["items"]:
        state = str(u.get("state") or "-")
        row: list[CellValue] = [
            u.get("id"), u.get("rollout"), u.get("component"), u.get("fromVersion"),
            u.get("toVersion"), Cell(state, fg=STATE_COLOURS.get(state)), u.get("attempt"),
            u.get("createdAt"), u.get("reason"),
        ]
        if wide:
            row += [u.get("completedAt"), u.get("triggeredBy"), u.get("correlationId"),
                    u.get("exitCode"), u.get("error")]
        rows.append(row)
    return headers, rows


# ---- status --------------------------------------------------------------------------------

def _parse_timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value).total_seconds()
    except (DurationError, OverflowError) as exc:
        raise click.BadParameter(str(exc)) from None


def _fetch(client: Client, name: str | None) -> Any:
    if name is None:
        return client.get("/api/v1/rollouts")
    return client.get(f"/api/v1/rollouts/{_q(name)}", not_found=f"no rollout named {name}")


def _items(data: Any) -> list[dict[str, Any]]:
    return list(data["items"]) if isinstance(data, dict) and "items" in data else [data]


def _phases(data: Any) -> dict[str, str]:
    return {str(r.get("name")): str((r.get("status") or {}).get("phase") or Phase.PENDING)
            for r in _items(data)}


def _finished(data: Any) -> bool:
    return all(p in TERMINAL_PHASES for p in _phases(data).values())


def _cell_text(cell: CellValue) -> str:
    if cell is None:
        return "-"
    return cell.text if isinstance(cell, Cell) else str(cell)


def _rich_table(data: Any, wide: bool) -> Any:
    from rich.table import Table
    from rich.text import Text

    headers, rows = rollout_rows(_items(data), wide, fancy=True)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, h in enumerate(headers):
        # On a narrow terminal the bar and the message give way; names and phases never do.
        width = max([len(h), *(len(_cell_text(r[i])) for r in rows)])
        flexible = h in ("progress", "message")
        table.add_column(h.upper(), no_wrap=h != "message",
                         min_width=None if flexible else width)
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, Cell):
                style = " ".join(s for s in ("bold" if cell.bold else "", cell.fg or "") if s)
                cells.append(Text(cell.text, style=style or ""))
            else:
                cells.append(Text(_cell_text(cell)))
        table.add_row(*cells)
    return table


def _watch(client: Client, name: str | None, output: str, timeout: float | None) -> Any:
    """Poll until every shown rollout is finished or the deadline passes; the last data."""
    deadline = None if timeout is None else time.monotonic() + timeout
    live_view = output in ("table", "wide") and sys.stdout.isatty()
    wide = output == "wide"
    data = _fetch(client, name)
    if live_view:
        from rich.console import Console
        from rich.live import Live

        console = Console(no_color=not use_colour())
        with Live(_rich_table(data, wide), console=console, refresh_per_second=4) as live:
            while not _finished(data) and (deadline is None or time.monotonic() < deadline):
                time.sleep(WATCH_INTERVAL)
                data = _fetch(client, name)
                live.update(_rich_table(data, wide))
        return data
    last_printed = None
    while True:
        if output in ("table", "wide"):
            headers, rows = rollout_rows(_items(data), wide)
            text = render_table(headers, rows)
            # Plain text for logs and pipes: a new table only when something changed.
            snapshot = repr([r[:7] + r[8:] for r in rows])  # AGE ticks; not a change
            if snapshot != last_printed:
                if last_printed is not None:
                    click.echo()
                click.echo(text)
                last_printed = snapshot
        if _finished(data) or (deadline is not None and time.monotonic() >= deadline):
            return data
        time.sleep(WATCH_INTERVAL)
        data = _fetch(client, name)


@click.command("status")
@click.argument("rollout", required=False)
@click.option("-w", "--watch", is_flag=True,
              help="Refresh every second until every shown rollout has finished.")
@click.option("--timeout", callback=_parse_timeout, metavar="DURATION",
              help="With --watch: give up after this long (e.g. 10m), exit 1.")
@output_option(("table", "wide", "json", "yaml"))
@_server_options
def status(rollout: str | None, watch: bool, timeout: float | None, output: str, server: str,
           token: str | None) -> None:
    """Show rollouts: phase, wave, progress and failure rate.

    With --watch, exit 0 when every shown rollout completed, 1 when one failed,
    was aborted or rolled back, or when --timeout passed.
    """
    if timeout is not None and not watch:
        raise click.UsageError("--timeout only makes sense with --watch")
    client = Client(server, token)
    if not watch:
        emit(_fetch(client, rollout), output, _rollout_table)
        return
    data = _watch(client, rollout, output, timeout)
    if output in ("json", "yaml"):
        emit(data, output, _rollout_table)
    phases = _phases(data)
    unfinished = sorted(n for n, p in phases.items() if p not in TERMINAL_PHASES)
    if unfinished:
        diagnostic(f"timed out after {timeout:g}s waiting for "
                   f"{', '.join(unfinished)}", "error")
        sys.exit(1)
    bad = sorted(f"{n} ({p})" for n, p in phases.items() if p in BAD_ENDINGS)
    if bad:
        diagnostic(f"did not complete: {', '.join(bad)}", "error")
        sys.exit(1)


# ---- devices and history -------------------------------------------------------------------

@click.command("devices")
@output_option(("table", "wide", "json", "yaml"))
@_server_options
def devices(output: str, server: str, token: str | None) -> None:
    """List devices: online, the versions they report, when they were last seen."""
    emit(Client(server, token).get_all("/api/v1/devices"), output, _devices_table)


@click.command("history")
@click.argument("device")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Newest records to show.")
@output_option(("table", "wide", "json", "yaml"))
@_server_options
def history(device: str, limit: int, output: str, server: str, token: str | None) -> None:
    """A device's update records, newest first."""
    data = Client(server, token).get(f"/api/v1/devices/{_q(device)}/updates",
                                     {"limit": limit}, not_found=f"no device {device}")
    emit(data, output, _history_table)


# ---- control -------------------------------------------------------------------------------

PAST: dict[ControlOp, str] = {"pause": "paused", "resume": "resumed", "promote": "promoted",
                              "abort": "aborted", "rollback": "rolling back"}


def _control(op: ControlOp, name: str, output: str, server: str, token: str | None,
             device: str | None = None) -> None:
    client = Client(server, token)
    not_found = f"no rollout named {name}"
    if op == "rollback" and device is not None:
        data = client.post(f"/api/v1/rollouts/{_q(name)}/devices/{_q(device)}/rollback",
                           not_found=f"no rollout named {name} with device {device}")
        message = f"rollout {name}: device {device} rolling back"
    else:
        body = {"device": device} if device is not None else None
        data = client.post(f"/api/v1/rollouts/{_q(name)}/{op}", body, not_found=not_found)
        target = f" device {device}" if device is not None else ""
        phase = (data.get("status") or {}).get("phase") if isinstance(data, dict) else None
        message = f"rollout {name}{target} {PAST[op]}" + (f" (phase {phase})" if phase else "")
    if output in ("json", "yaml"):
        emit(data, output)
    else:
        click.echo(message)


def _control_command(op: ControlOp, help_text: str, *,
                     device_help: str | None = None) -> click.Command:
    def run(rollout: str, output: str, server: str, token: str | None,
            device: str | None = None) -> None:
        _control(op, rollout, output, server, token, device)

    run.__doc__ = help_text
    command: Callable[..., Any] = _server_options(output_option(("table", "json", "yaml"))(run))
    if device_help is not None:
        command = click.option("--device", metavar="UUID", default=None, help=device_help)(command)
    command = click.argument("rollout")(command)
    return click.command(op)(command)


pause = _control_command("pause", "Pause a rollout: no new commands; open updates finish.")
resume = _control_command("resume", "Resume a paused rollout.")
promote = _control_command(
    "promote", "Start a rollout's next wave now (skipping its pause or approval).",
    device_help="Release only this parked device instead of the whole wave.")
abort = _control_command("abort", "Stop a rollout; devices keep what they run.")
rollback = _control_command(
    "rollback", "Put a rollout's updated devices back on their previous version.",
    device_help="Roll back only this device.")

__all__ = ["ClientError", "abort", "devices", "history", "pause", "promote", "resume",
           "rollback", "status"]
