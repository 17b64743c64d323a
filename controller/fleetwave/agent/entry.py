"""`fleetwave agent --config FILE`: argument parsing and logging with the stdlib only.

`fleetwave.cli.main.main` hands `agent …` here before click is imported, so a device runs
the agent without the controller's dependencies. Exit codes: 0 stopped cleanly, 1 error
(e.g. a bad config file), 2 usage, 75 restart me (a new agent version awaits confirmation).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fleetwave.agent.config import AgentConfig

FORBIDDEN: Final = ("click", "aiohttp", "sqlalchemy", "kopf", "structlog", "rich",
                    "aiomqtt", "pygit2", "kubernetes", "jsonschema")
"""Controller dependencies the agent must never load (a device need not have them)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetwave agent",
        description="The fleetwave device agent: verifies signed commands, installs, "
                    "health-checks, confirms or rolls back (DESIGN.md 9.2).")
    parser.add_argument("--config", default=os.environ.get("FLEETWAVE_AGENT_CONFIG"),
                        help="the agent's YAML config (env FLEETWAVE_AGENT_CONFIG)")
    parser.add_argument("--supervise", action="store_true",
                        help="run the selfUpdate component's exec argv, restart it, and "
                             "restore the previous agent when a new one never confirms")
    parser.add_argument("--log-level", default=os.environ.get("FLEETWAVE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--check-imports", action="store_true",
                        help="load everything the agent uses, print the controller-only "
                             "modules that got imported as JSON (none expected), and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.config:
        print("fleetwave agent: --config FILE is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from fleetwave.agent.config import ConfigError, load_config
    from fleetwave.agent.journal import JournalError

    try:
        config = load_config(args.config)
        if args.check_imports:
            return _check_imports(config)
        if args.supervise:
            from fleetwave.agent.selfupdate import supervise
            return supervise(config)
        from fleetwave.agent.device import Agent
        agent = Agent(config)
    except (ConfigError, JournalError) as exc:
        print(f"fleetwave agent: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    return agent.run()


def _check_imports(config: AgentConfig) -> int:
    import fleetwave.agent.pipeline
    import fleetwave.agent.selfupdate  # noqa: F401
    from fleetwave.agent.device import Agent
    from fleetwave.agent.handlers import make_handler

    Agent(config)
    for component in config.components.values():
        make_handler(component, config.state_dir)
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN)
    print(json.dumps({"forbidden": loaded, "modules": len(sys.modules)}))
    return 1 if loaded else 0
