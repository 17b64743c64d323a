"""The `fleetwave` command: a lazy click group, so `fleetwave validate` in a user's CI
does not pay for importing kopf, kubernetes and SQLAlchemy.

Every flag also reads an environment variable (`--broker` = `FLEETWAVE_BROKER`):
click's `auto_envvar_prefix` does that for all commands at once; flags win.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from fleetwave import __version__

# name -> (module, attribute, one-line help). Help is here so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("fleetwave.cli.run", "run", "Run the standalone controller (folder or git source)."),
    "operator": ("fleetwave.cli.operator", "operator", "Run as a Kubernetes operator."),
    "demo": ("fleetwave.cli.demo", "demo", "Broker, controller and a simulated fleet, live."),
    "simulate": ("fleetwave.cli.simulate", "simulate", "A fleet of simulated devices."),
    "validate": ("fleetwave.cli.validate", "validate", "Check Rollout files (for your CI)."),
    "plan": ("fleetwave.cli.plan", "plan", "Preview which devices each wave would touch."),
    "crds": ("fleetwave.cli.crds", "crds", "Write the CustomResourceDefinitions."),
    "keys": ("fleetwave.cli.keys", "keys", "Create the command signing key, print its public key."),
    "status": ("fleetwave.cli.control", "status", "Show rollouts and their progress."),
    "devices": ("fleetwave.cli.control", "devices", "List devices and what they run."),
    "history": ("fleetwave.cli.control", "history", "A device's update history."),
    "pause": ("fleetwave.cli.control", "pause", "Pause a rollout."),
    "resume": ("fleetwave.cli.control", "resume", "Resume a paused rollout."),
    "promote": ("fleetwave.cli.control", "promote", "Start a rollout's next wave now."),
    "abort": ("fleetwave.cli.control", "abort", "Stop a rollout; devices keep what they run."),
    "rollback": ("fleetwave.cli.control", "rollback", "Put a rollout's devices back."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, short = entry
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise

            @click.command(cmd_name, help=f"{short} (not available in this build)")
            def unavailable() -> None:
                raise click.UsageError(f"`fleetwave {cmd_name}` is not available in this build")

            return unavailable
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "FLEETWAVE",
                                              "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetwave")
def cli() -> None:
    """fleetwave keeps device fleets on the software versions declared in git or Kubernetes."""


def main(argv: list[str] | None = None) -> Any:
    """Console entry point; exit codes: 0 ok, 1 error, 2 usage."""
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="fleetwave")
