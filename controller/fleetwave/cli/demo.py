"""`fleetwave demo`: a broker, a controller, a simulated fleet and a git repo, shown live."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import IO, Any, TextIO

import click
import structlog
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleetwave.cli.run import cidr_list
from fleetwave.resources.vocabulary import Phase
from fleetwave.runtime.demo import DemoOptions, DemoState, run_demo

PHASE_STYLE = {Phase.COMPLETED: "green", Phase.PROGRESSING: "cyan", Phase.PAUSED: "yellow",
               Phase.WAITING: "blue", Phase.FAILED: "red", Phase.ABORTED: "red",
               Phase.ROLLED_BACK: "magenta"}


def _rollout_rows(state: DemoState) -> list[dict[str, Any]]:
    if state.engine is None:
        return []
    return state.engine.list_rollouts()


def _render(state: DemoState) -> Group:
    elapsed = time.monotonic() - state.started
    fleet = state.fleet
    header = Table.grid(padding=(0, 2))
    header.add_row(Text("fleetwave demo", style="bold"), f"{elapsed:5.0f}s",
                   f"dashboard {state.dashboard_url}", f"broker {state.broker_url}")
    if fleet is not None:
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(fleet.counts().items(),
                                                           key=lambda kv: str(kv[0])))
        header.add_row("fleet", f"{fleet.online_count()}/{len(fleet.devices)} online",
                       f"agent versions {versions}", "")
    if state.commits:
        header.add_row("git", f"commit {state.commits[-1]}",
                       "bumped agent to 1.0.7 and added nodered-production", "")
    for agent in state.agents.agents if state.agents else ():
        header.add_row("real agent", agent.device, f"runs {agent.version() or '?'}",
                       f"{agent.current} -> {_link(agent.current)}")
    table = Table(expand=True)
    for column in ("rollout", "version", "phase", "step", "progress", "done", "failures",
                   "in flight", "failed", "unreachable", "message"):
        table.add_column(column, no_wrap=column != "message")
    for item in _rollout_rows(state):
        status = item["status"]
        counts = status.get("counts", {})
        targeted = int(status.get("targeted", 0))
        done = int(status.get("done", 0))
        in_flight = sum(counts.get(k, 0) for k in ("pending", "acknowledged", "scheduled",
                                                   "in_progress"))
        phase = status.get("phase", Phase.PENDING)
        steps = len(item["spec"].get("strategy", {}).get("steps", [])) or 1
        table.add_row(
            item["name"], item["spec"]["version"], Text(phase, style=PHASE_STYLE.get(phase, "")),
            f"{int(status.get('currentStep', 0)) + 1}/{steps}",
            ProgressBar(total=max(targeted, 1), completed=done, width=24),
            f"{done}/{targeted}", f"{float(status.get('failureRate', 0.0)):.1f}%",
            str(in_flight), str(counts.get("failed", 0) + counts.get("timeout", 0)),
            str(counts.get("unreachable", 0)), status.get("message", ""))
    footer = Text("Ctrl-C stops the broker, the controller and the fleet.", style="dim")
    return Group(header, table, footer)


def _link(path: os.PathLike[str]) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "(none yet)"


class _PlainPrinter:
    """Without a terminal: one line whenever a rollout's phase, step or progress changes,
    or a real agent's files change on disk."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last: dict[str, tuple[tuple[Any, ...], float]] = {}
        self.agent_versions: dict[str, str | None] = {}

    def show_agents(self, state: DemoState, elapsed: float) -> None:
        for agent in state.agents.agents if state.agents else ():
            version = agent.version()
            if self.agent_versions.get(agent.device, "") != version:
                self.agent_versions[agent.device] = version
                self.out.write(f"[{elapsed:5.0f}s] real agent {agent.device} runs {version}: "
                               f"{agent.current} -> {_link(agent.current)}\n")
                self.out.flush()

    def show(self, state: DemoState) -> None:
        elapsed = time.monotonic() - state.started
        self.show_agents(state, elapsed)
        for item in _rollout_rows(state):
            status = item["status"]
            key = (status.get("phase"), status.get("currentStep"), status.get("done"))
            last = self.last.get(item["name"])
            if last is not None and (last[0] == key or (
                    last[0][:2] == key[:2] and elapsed - last[1] < 3.0)):
                continue  # same phase and step: at most a line every 3 s
            self.last[item["name"]] = (key, elapsed)
            self.out.write(
                f"[{elapsed:5.0f}s] {item['name']:<20} {item['spec']['version']:<8} "
                f"{status.get('phase', 'Pending'):<12} step {int(status.get('currentStep', 0)) + 1}"
                f"  done {status.get('progress', '0/0'):<11} "
                f"failures {float(status.get('failureRate', 0.0)):.1f}%  "
                f"{status.get('message', '')}\n")
            self.out.flush()


@click.command("demo")
@click.option("--devices", default=2000, show_default=True, type=click.IntRange(1, 20000),
              help="Simulated devices.")
@click.option("--speed", default=4.0, show_default=True, type=float,
              help="Divides simulated update durations.")
@click.option("--fail-rate", default=0.02, show_default=True, type=float,
              help="Share of updates that fail.")
@click.option("--offline-rate", default=0.01, show_default=True, type=float,
              help="Share of updates during which the device goes offline.")
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              help="Where the controller's API listens (try `fleetwave status` there).")
@click.option("--workdir", default=None, help="Keep the demo's files here (default: a temp dir).")
@click.option("--keep", is_flag=True, help="Do not delete the demo's files at the end.")
@click.option("--duration", default=0.0, type=float,
              help="Stop by itself after this many seconds (0: run until Ctrl-C).")
@click.option("--health-check-allow", multiple=True, metavar="CIDR", callback=cidr_list,
              default=DemoOptions.health_check_allow, show_default=True,
              envvar="FLEETWAVE_HEALTH_CHECK_ALLOW",
              help="Ranges health checks may reach although refused by default; repeatable.")
@click.option("--agents", default=0, show_default=True, type=click.IntRange(0, 20),
              help="Real `fleetwave agent` processes (files handler) beside the simulated "
                   "fleet; the demo prints where their files are.")
@click.option("--signing-key", default=None, envvar="FLEETWAVE_SIGNING_KEY",
              type=click.Path(dir_okay=False),
              help="The controller's signing key (default: a new one in the workdir).")
def demo(devices: int, speed: float, fail_rate: float, offline_rate: float, seed: int,
         listen: str, workdir: str | None, keep: bool, duration: float,
         health_check_allow: tuple[str, ...], signing_key: str | None, agents: int) -> None:
    """Run a broker, a controller on SQLite, a simulated fleet and a local git repository
    of Rollouts, and show the rollout moving through its waves. Midway the demo commits a
    new version to the repository: GitOps picks it up. Ctrl-C stops all of it."""
    options = DemoOptions(devices=devices, speed=speed, fail_rate=fail_rate,
                          offline_rate=offline_rate, seed=seed, listen=listen,
                          workdir=workdir, keep=keep, health_check_allow=health_check_allow,
                          signing_key=signing_key, agents=agents)
    log_path = None
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        log_path = os.path.join(workdir, "fleetwave-demo.log")
    _quiet_logs(log_path)
    try:
        asyncio.run(_main(options, duration))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a demo that cannot start says why in one line
        click.echo(f"fleetwave demo: {exc}", err=True)
        sys.exit(1)


def _quiet_logs(path: str | None) -> None:
    """The live table owns the terminal: controller logs go to a file, warnings and up."""
    target: TextIO = open(path, "a", encoding="utf-8") if path else open(os.devnull, "w")  # noqa: SIM115
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=target),
    )


async def _main(options: DemoOptions, duration: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration > 0:
        loop.call_later(duration, stop.set)
    console = Console(stderr=False)
    # The first line a user sees: where to watch it in a browser.
    click.echo(f"Dashboard: http://{options.listen}/  (the API is there too; Ctrl-C stops "
               "the demo)")
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            async def show(state: DemoState) -> None:
                live.update(_render(state))
            await run_demo(options, stop, show)
    else:
        printer = _PlainPrinter(sys.stdout)

        async def show_plain(state: DemoState) -> None:
            printer.show(state)
        await run_demo(options, stop, show_plain)
