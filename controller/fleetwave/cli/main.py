"""The `fleetwave` command: a lazy click group, so `fleetwave validate` in a user's CI
does not pay for importing kopf, kubernetes and SQLAlchemy.

Every flag also reads an environment variable (`--broker` = `FLEETWAVE_BROKER`):
click's `auto_envvar_prefix` does that for all commands at once; flags win.

`fleetwave agent` runs on devices without the controller's dependencies: `main` hands it
to `fleetwave.agent.entry` before click is imported (the group lives in
`fleetwave.cli.group`).
"""

from __future__ import annotations

import sys
from typing import Any

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
    "agent": ("fleetwave.cli.agent", "agent", "Run the device agent (stdlib, paho, pyyaml)."),
}


def main(argv: list[str] | None = None) -> Any:
    """Console entry point; exit codes: 0 ok, 1 error, 2 usage."""
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["agent"]:
        from fleetwave.agent.entry import main as agent_main
        sys.exit(agent_main(args[1:]))
    from fleetwave.cli.group import cli
    return cli.main(args=args, prog_name="fleetwave")


def __getattr__(name: str) -> Any:
    """`from fleetwave.cli.main import cli` keeps working (tests use click's runner)."""
    if name in ("cli", "LazyGroup"):
        from fleetwave.cli import group
        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
