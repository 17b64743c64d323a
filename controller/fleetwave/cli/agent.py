"""`fleetwave agent` inside the click group: only reached through click's own entry
(`fleetwave.cli.main.main` hands `agent` over before click loads)."""

from __future__ import annotations

import sys

import click


@click.command("agent", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True,
                                          "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """Run the device agent: `fleetwave agent --config FILE` (see --help)."""
    from fleetwave.agent.entry import main

    sys.exit(main(list(args)))
