"""The agent process: admits commands, journals them, reports, and runs the update worker.

Commands arrive in paho's network thread. Each goes through `fleetwave.protocol.admission
.admit` — the one verification path the simulator uses too — under the journal lock; an
accepted one is journalled (its `Executed` entry and a new `Attempt`) *before* it is
acknowledged, then a single worker thread (`fleetwave.agent.pipeline.Updater`) carries the
attempts out one by one. A refused command is reported with `reports.refusal_body`; a
repeated one gets its final status again; a cancel flags its attempt for the worker.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any, Final

from fleetwave.agent.config import AgentConfig, Component
from fleetwave.agent.failures import Reason
from fleetwave.agent.handlers import Handler, make_handler
from fleetwave.agent.journal import Attempt, Journal, Phase
from fleetwave.agent.link import DeviceLink
from fleetwave.protocol import reports
from fleetwave.protocol.admission import Accepted, Refused, Repeated, admit
from fleetwave.protocol.messages import Command, StatusType
from fleetwave.protocol.topics import Topics

log = logging.getLogger(__name__)

RESTART_EXIT: Final = 75
"""Exit status that asks the supervisor (systemd, `--supervise`) to start the agent again
at once: a new agent version is installed and must confirm itself."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.journal = Journal.open(config.state_dir)
        self.handlers: dict[str, Handler] = {
            name: make_handler(c, config.state_dir) for name, c in config.components.items()}
        self.topics = Topics(prefix=config.topic_prefix)
        self.link = DeviceLink(config, self.topics, on_command=self.on_command,
                               on_connected=self.announce)
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.exit_code = 0

    # --- what the device runs and says ---

    def version_of(self, component: Component) -> str:
        return (self.journal.versions.get(component.name)
                or self.handlers[component.name].running_version() or component.version)

    def versions(self) -> dict[str, str]:
        return {name: self.version_of(c) for name, c in self.config.components.items()}

    def boot_id(self) -> str | None:
        """This boot's id (`bootIdFile`), None where the system names none."""
        try:
            return self.config.boot_id_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def report(self, type_: StatusType | str, cid: str | None, **fields: Any) -> dict[str, Any]:
        """A progress status; it names the boot, which the controller keeps from the ones
        sent before an install (what `confirmAfterRestart` compares a restart with)."""
        body = reports.status_body(type_, cid, now_ms(), boot_id=self.boot_id(), **fields)
        self.link.publish(self.topics.status(self.config.device), body)
        return body

    def publish_state(self) -> None:
        versions = self.versions()
        labels = dict(self.config.labels)
        if self.config.timezone and "timezone" not in labels:
            labels["timezone"] = self.config.timezone
        handlers = list(self.handlers.values())
        containers = [c for name, h in self.handlers.items()
                      for c in h.containers(versions[name])]
        body = reports.state_body(self.config.device, versions, now_ms(), labels=labels,
                                  deployment_type=handlers[0].deployment_type,
                                  containers=containers, boot_id=self.boot_id())
        self.link.publish(self.topics.state(self.config.device), body, retain=True)

    def announce(self) -> None:
        """On every connect: retained state, and the newest final status again (it may have
        been lost with the link; the controller ignores a duplicate)."""
        self.publish_state()
        with self.journal.lock:
            last = self.journal.finished.get(self.journal.last_final or "")
        if last is not None:
            self.link.publish(self.topics.status(self.config.device), last)

    # --- commands (paho's network thread) ---

    def on_command(self, payload: bytes) -> None:
        if not payload:
            return  # the controller cleared the retained command: nothing to do
        with self.journal.lock:
            verdict = admit(payload, device=self.config.device, trusted=self.config.trust,
                            now=time.time(), executed=self.journal.executed,
                            running=self.versions())
            if isinstance(verdict, Refused):
                log.warning("refused a command (%s): %s", verdict.reason, verdict.cause)
                self.link.publish(self.topics.status(self.config.device),
                                  reports.refusal_body(verdict, now_ms()))
                return
            if isinstance(verdict, Repeated):
                self._repeat(verdict.command)
                return
            try:
                self._accept(verdict)
            except OSError as exc:  # the journal cannot be written (a full disk)
                self.disk_failed(verdict.command.correlation_id, exc)

    def disk_failed(self, cid: str, exc: OSError) -> None:
        """A write failed (the journal, a handler's file): nothing unjournalled is acted on,
        so forget the in-memory change, say why, and stay on the version we run."""
        log.error("cannot write %s: %s", exc.filename or self.config.state_dir, exc)
        self.journal.reload()
        reason = Reason.DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Reason.INSTALL
        self.report(StatusType.FAILED, cid, reason=reason,
                    error=f"cannot write {exc.filename or self.config.state_dir}: "
                          f"{exc.strerror or exc}")

    def _repeat(self, command: Command) -> None:
        """The controller re-publishes until it hears from us: answer again, act once."""
        cid = command.correlation_id
        final = self.journal.finished.get(cid)
        if final is not None:
            self.link.publish(self.topics.status(self.config.device), final)
            return
        attempt = self.journal.attempt(cid)
        if attempt is not None:  # open: the worker is on it; the acknowledgement may be lost
            self.report(StatusType.COMMAND_RECEIVED, cid, version=attempt.version)
            if attempt.phase is Phase.SCHEDULED:
                self.report(StatusType.SCHEDULED, cid, version=attempt.version,
                            scheduled_time=attempt.scheduled_time)

    def _accept(self, accepted: Accepted) -> None:
        command = accepted.command
        self.journal.executed[command.component] = accepted.executed
        if command.action == "cancel":
            self._cancel(command)
            return
        component = self.config.components.get(command.component)
        if component is None:
            self.journal.save()
            self.report(StatusType.COMMAND_RECEIVED, command.correlation_id,
                        version=command.version)
            final = self.report(StatusType.FAILED, command.correlation_id,
                                reason=Reason.UNKNOWN_COMPONENT,
                                error=f"this device has no component {command.component!r}")
            self.journal.remember(command.correlation_id, final)
            return
        for open_attempt in self.journal.attempts:
            if open_attempt.component == command.component:
                open_attempt.cancel_requested = True  # superseded by the newer attempt
        self.journal.attempts.append(Attempt(
            correlation_id=command.correlation_id, component=command.component,
            action=command.action, version=command.version, release=accepted.executed.release,
            from_version=self.version_of(component), artifact_url=command.artifact_url,
            sha256=command.artifact_sha256, digest=command.artifact_digest,
            scheduled_time=command.scheduled_time, force=command.force,
            confirm_after_restart=command.confirm_after_restart))
        self.journal.save()  # write-ahead: journalled before it is acknowledged
        self.report(StatusType.COMMAND_RECEIVED, command.correlation_id, version=command.version)
        self.wakeup.set()

    def _cancel(self, command: Command) -> None:
        cid = command.correlation_id
        target = next((a for a in self.journal.attempts
                       if a.component == command.component
                       and (not cid or a.correlation_id == cid)), None)
        if target is None:
            self.journal.save()
            final = self.journal.finished.get(cid)
            if final is None:  # nothing open by that id: it is cancelled by definition
                final = self.report(StatusType.CANCELLED, cid)
                self.journal.remember(cid, final)
            else:
                self.link.publish(self.topics.status(self.config.device), final)
            return
        self.journal.step(target, cancel_requested=True)
        log.info("cancel requested for %s (phase %s)", target.correlation_id, target.phase)
        self.wakeup.set()

    # --- lifecycle ---

    def run(self) -> int:
        from fleetwave.agent.pipeline import Updater
        from fleetwave.agent.selfupdate import expire_unconfirmed

        if expire_unconfirmed(self.config, self.journal, self.handlers):
            return RESTART_EXIT  # the previous agent is back on disk: let it start
        updater = Updater(self)
        worker = threading.Thread(target=updater.work, name="fleetwave-agent-worker",
                                  daemon=True)
        self.link.start()
        worker.start()
        while not self.stopping.wait(0.5):
            if not worker.is_alive():
                break
        worker.join(timeout=30)
        self.link.stop()
        return self.exit_code

    def stop(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        self.stopping.set()
        self.wakeup.set()

    def open_attempt(self) -> Attempt | None:
        with self.journal.lock:
            return self.journal.attempts[0] if self.journal.attempts else None

    def is_installing(self, attempt: Attempt) -> bool:
        return attempt.phase in (Phase.INSTALLING, Phase.INSTALLED,
                                 Phase.AWAITING_CONFIRMATION, Phase.AWAITING_RESTART)
