"""The click group behind `fleetwave`: commands are imported only when they run.

Split from `fleetwave.cli.main` so that `fleetwave agent` (handed off there before this
module loads) never imports click.
"""

from __future__ import annotations

import importlib

import click

from fleetwave import __version__
from fleetwave.cli.main import COMMANDS


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
