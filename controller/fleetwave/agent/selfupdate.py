"""Updating the agent itself (seed 001): install, restart, confirm — or restore.

A component with `selfUpdate: true` is the agent. Its new version is installed by its
handler like any other (typically `files`: `current` then points at the new agent), then
the journal records `awaiting_confirmation` with a deadline (`confirmTimeout`) and the
agent exits with status 75. Whatever supervises it starts the program again:

- `fleetwave agent --supervise` runs the component's `exec` argv, restarts it when it
  exits, and, when the journal is still awaiting confirmation past the deadline (the new
  agent crashes, hangs or never connects), stops it, restores the previous version through
  the handler and starts that one;
- or systemd (`Restart=always` in `examples/agent/fleetwave-agent.service`), with the same
  check at every start (`expire_unconfirmed`).

The new agent confirms by connecting, passing its health check and journalling
`update_succeeded` (then reported). The restored old agent reports the `update_failed`
reason `not_confirmed` that the supervisor journalled, when it connects.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Final

from fleetwave.agent.config import AgentConfig
from fleetwave.agent.device import RESTART_EXIT, now_ms
from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step, make_handler
from fleetwave.agent.journal import Journal, Phase
from fleetwave.protocol import reports
from fleetwave.protocol.messages import StatusType

log = logging.getLogger(__name__)

POLL: Final = 0.5
BACKOFF_MAX: Final = 30.0


def expire_unconfirmed(config: AgentConfig, journal: Journal,
                       handlers: Mapping[str, Handler]) -> bool:
    """Restore the previous version of every self-update past its deadline unconfirmed;
    True when the agent itself was restored (the running program must restart)."""
    restored = False
    with journal.lock:
        expired = [a for a in journal.attempts if a.phase is Phase.AWAITING_CONFIRMATION
                   and a.deadline is not None and time.time() > a.deadline]
    for a in expired:
        handler = handlers[a.component]
        error = (f"agent {a.version} did not confirm within {config.confirm_timeout:g} s")
        version: str | None = a.from_version
        try:
            handler.restore(Step(version=a.version, from_version=a.from_version,
                                 marks=tuple(a.marks)))
            error += f"; previous version {a.from_version} restored"
        except UpdateFailure as exc:
            error += f"; restoring {a.from_version} failed: {exc}"
            version = "unknown"
        log.warning("%s", error)
        journal.finish(a, reports.status_body(StatusType.FAILED, a.correlation_id, now_ms(),
                                              reason=Reason.NOT_CONFIRMED, error=error),
                       version)
        restored = restored or handler.component.self_update
    return restored


def supervise(config: AgentConfig) -> int:
    """Run the agent program and keep it running; restore an unconfirmed new version."""
    component = next((c for c in config.components.values() if c.self_update), None)
    if component is None:
        log.error("--supervise needs a component with selfUpdate: true")
        return 2
    handlers = {name: make_handler(c, config.state_dir)
                for name, c in config.components.items()}
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    backoff = 1.0
    while not stopping.is_set():
        journal = Journal.open(config.state_dir)
        expire_unconfirmed(config, journal, handlers)
        log.info("starting %s", " ".join(component.exec_argv))
        child = subprocess.Popen(list(component.exec_argv))
        code = _watch(child, config, journal, stopping)
        if stopping.is_set():
            break
        if code == RESTART_EXIT:
            backoff = 1.0
            continue
        log.warning("agent exited with %s; starting it again in %.0f s", code, backoff)
        stopping.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
    return 0


def _watch(child: subprocess.Popen[bytes], config: AgentConfig, journal: Journal,
           stopping: threading.Event) -> int:
    """Wait for `child`; stop it on shutdown or when a self-update's deadline passes."""
    while True:
        try:
            return child.wait(POLL)
        except subprocess.TimeoutExpired:
            pass
        if stopping.is_set():
            return _stop(child)
        journal.reload()
        with journal.lock:
            overdue = any(a.phase is Phase.AWAITING_CONFIRMATION and a.deadline is not None
                          and time.time() > a.deadline for a in journal.attempts)
        if overdue:
            log.warning("the new agent did not confirm in time: stopping it")
            _stop(child)
            return RESTART_EXIT  # restart at once: expire_unconfirmed restores first


def _stop(child: subprocess.Popen[bytes]) -> int:
    child.terminate()
    try:
        return child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()
