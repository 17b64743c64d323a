"""The update worker: one attempt at a time, each step journalled before it is taken.

    received -> (scheduled) -> downloading -> downloaded -> installing -> installed
             -> health check -> update_succeeded              (or awaiting_confirmation
                                                                for the agent itself)
    installed -> awaiting_restart -> (another boot id) -> health check -> update_succeeded
                                                       (a command with confirm_after_restart)

Resuming after a crash is the same loop: an attempt found before `installing` simply
continues (the download resumes); one found `installing` may be half done, so the
previous version is restored and `update_failed` reason `interrupted` reported; one found
`installed` is health-checked again now, after the restart, and only then reported
succeeded — the agent never reports a version it has not seen running in this process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fleetwave.agent.device import RESTART_EXIT, Agent, now_ms
from fleetwave.agent.download import fetch
from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step, must
from fleetwave.agent.journal import Attempt, Phase
from fleetwave.protocol import reports
from fleetwave.protocol.admission import parse_time
from fleetwave.protocol.messages import StatusType

log = logging.getLogger(__name__)

JOURNAL_RETRY = 30.0
"""Seconds before an attempt whose step could not be journalled is tried again."""


class _Stopping(Exception):
    """The agent is shutting down: leave the attempt journalled where it is."""


class Updater:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.journal = agent.journal

    def work(self) -> None:
        agent = self.agent
        while not agent.stopping.is_set():
            attempt = agent.open_attempt()
            if attempt is None:
                agent.wakeup.wait(1.0)
                agent.wakeup.clear()
                continue
            try:
                self.process(attempt)
            except _Stopping:
                return
            except OSError as exc:  # e.g. the journal cannot be written: act on nothing, retry
                agent.disk_failed(attempt.correlation_id, exc)
                if agent.stopping.wait(JOURNAL_RETRY):
                    return
            except Exception as exc:  # a bug must not leave the device half-updated
                log.exception("update %s failed unexpectedly", attempt.correlation_id)
                self.fail(attempt, UpdateFailure(Reason.INSTALL, f"agent error: {exc}"),
                          restore=agent.is_installing(attempt))

    def process(self, a: Attempt) -> None:
        if a.action == "rollback":
            self.rollback(a)
        elif a.phase is Phase.AWAITING_CONFIRMATION:
            self.confirm(a)
        elif a.phase is Phase.AWAITING_RESTART or (a.phase is Phase.INSTALLED
                                                   and a.confirm_after_restart):
            self.await_restart(a)
        elif a.phase is Phase.INSTALLING:
            self.fail(a, UpdateFailure(Reason.INTERRUPTED, "the agent stopped during the "
                                       f"install of {a.version}"), restore=True)
        elif a.phase is Phase.INSTALLED:
            self.verify(a)
        else:
            self.update(a)

    # --- helpers ---

    def handler(self, a: Attempt) -> Handler:
        return self.agent.handlers[a.component]

    def step(self, a: Attempt) -> Step:
        return Step(version=a.version, from_version=a.from_version,
                    artifact=Path(a.artifact_path) if a.artifact_path else None,
                    digest=a.digest, marks=tuple(a.marks),
                    mark=lambda name: self.journal.step(a, mark=name))

    def wait(self, a: Attempt, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not a.cancel_requested and time.monotonic() < end:
            if self.agent.stopping.is_set():
                raise _Stopping
            self.agent.wakeup.wait(min(1.0, max(0.0, end - time.monotonic())))
            self.agent.wakeup.clear()

    def finish(self, a: Attempt, type_: StatusType, now_running: str | None,
               **fields: Any) -> None:
        """Journal the final status (and the version now running) first, then send it and
        the new state."""
        body = reports.status_body(type_, a.correlation_id, now_ms(), **fields)
        self.journal.finish(a, body, now_running)
        if a.artifact_path:  # a retry downloads again; a device's disk is small
            Path(a.artifact_path).unlink(missing_ok=True)
        self.agent.link.publish(self.agent.topics.status(self.agent.config.device), body)
        self.agent.publish_state()
        log.info("%s %s %s: %s", a.action, a.component, a.version, type_)

    def fail(self, a: Attempt, failure: UpdateFailure, *, restore: bool) -> None:
        version, note = self.put_back(a) if restore else (None, "")
        failed = StatusType.ROLLBACK_FAILED if a.action == "rollback" else StatusType.FAILED
        self.finish(a, failed, version, reason=failure.reason, error=str(failure) + note,
                    exit_code=failure.exit_code)

    def put_back(self, a: Attempt) -> tuple[str, str]:
        """Restore the previous version; (the version now running, a note for the error)."""
        handler = self.handler(a)
        try:
            if handler.restore(self.step(a)):
                handler.check(Step(version=a.from_version or "", from_version=None))
                return a.from_version or "unknown", f"; previous version {a.from_version} restored"
            return a.from_version or "unknown", ""
        except UpdateFailure as exc:
            # the truth: neither version is known to run
            return "unknown", f"; restoring {a.from_version} failed: {exc}"

    @staticmethod
    def cancel_asked(a: Attempt) -> bool:
        """Read afresh: the network thread sets it while the worker runs."""
        return a.cancel_requested

    def cancelled(self, a: Attempt) -> None:
        self.finish(a, StatusType.CANCELLED, None)

    def health(self, a: Attempt) -> None:
        handler = self.handler(a)
        handler.check(self.step(a))
        if handler.component.health_check:
            must(handler.component.health_check, Reason.HEALTH, env=self.step(a).env,
                 timeout=handler.component.timeout)

    # --- the update ---

    def update(self, a: Attempt) -> None:
        agent, handler = self.agent, self.handler(a)
        if a.phase is Phase.RECEIVED:
            if a.version == a.from_version and not a.force:
                self.finish(a, StatusType.SUCCEEDED, a.version, version=a.version,
                            reason="already_at_version")
                return
            when = parse_time(a.scheduled_time) if a.scheduled_time else None
            if when is not None and when.timestamp() > time.time():
                self.journal.step(a, Phase.SCHEDULED)
                agent.report(StatusType.SCHEDULED, a.correlation_id, version=a.version,
                             scheduled_time=a.scheduled_time)
                self.wait(a, when.timestamp() - time.time())
        if a.cancel_requested:
            self.cancelled(a)
            return
        agent.report(StatusType.STARTED, a.correlation_id, current_version=a.from_version,
                     target_version=a.version, deployment_type=handler.deployment_type)
        try:
            self.download(a, handler)
        except UpdateFailure as failure:
            if failure.reason is Reason.CANCELLED or self.cancel_asked(a):
                self.cancelled(a)
            else:
                self.fail(a, failure, restore=False)
            return
        if self.cancel_asked(a):
            self.cancelled(a)
            return
        self.journal.step(a, Phase.INSTALLING, boot_id=agent.boot_id())
        try:
            handler.install(self.step(a))
        except UpdateFailure as failure:
            self.fail(a, failure, restore=True)
            return
        self.journal.step(a, Phase.INSTALLED)
        if handler.component.self_update:
            self.await_confirmation(a)
            return
        if a.confirm_after_restart:
            self.await_restart(a)
            return
        self.verify(a)

    def download(self, a: Attempt, handler: Handler) -> None:
        config = self.agent.config
        self.journal.step(a, Phase.DOWNLOADING)
        if a.artifact_url is None:
            if handler.needs_artifact():
                raise UpdateFailure(Reason.NO_ARTIFACT, f"the {handler.name} handler needs "
                                    "artifact.url and artifact.sha256")
            return
        if not a.sha256:
            raise UpdateFailure(Reason.CHECKSUM, "artifact.url without artifact.sha256")
        reported = [0]

        def progress(done: int, total: int | None) -> None:
            percent = done * 100 // total if total else 0
            if percent // 25 > reported[0] and percent < 100:
                reported[0] = percent // 25
                self.agent.report(StatusType.PROGRESS, a.correlation_id,
                                  percent=reported[0] * 25)

        def stop_asked() -> bool:
            if self.agent.stopping.is_set():
                raise _Stopping
            return a.cancel_requested

        path = fetch(a.artifact_url, a.sha256, config.state_dir / "downloads",
                     max_bytes=config.max_artifact_bytes, timeout=config.download_timeout,
                     progress=progress, cancelled=stop_asked)
        self.journal.step(a, Phase.DOWNLOADED, artifact_path=str(path))

    def verify(self, a: Attempt) -> None:
        """Health after install (or after a restart that found it installed)."""
        try:
            self.health(a)
        except UpdateFailure as failure:
            self.fail(a, failure, restore=True)
            return
        if self.cancel_asked(a):  # cancelled while installing: do not stay on it
            version, note = self.put_back(a)
            self.finish(a, StatusType.CANCELLED, version,
                        error="cancelled during the install" + note)
            return
        self.handler(a).finish(self.step(a))
        self.finish(a, StatusType.SUCCEEDED, a.version, version=a.version)

    def await_restart(self, a: Attempt) -> None:
        """`confirm_after_restart`: nothing is reported until the device has restarted (its
        boot id changed since the install); then the health check decides, as after any
        restart. The device's own tooling restarts it (an install hook, an operator, RAUC's
        reboot); the agent only waits, and a cancel meanwhile puts the old version back."""
        agent = self.agent
        if a.phase is not Phase.AWAITING_RESTART:
            self.journal.step(a, Phase.AWAITING_RESTART)
            agent.report(StatusType.PROGRESS, a.correlation_id, percent=90)
            log.info("%s %s installed; waiting for a restart to confirm it", a.component,
                     a.version)
        if a.boot_id is None:  # a restart cannot be told apart: never assumed
            self.fail(a, UpdateFailure(Reason.NOT_CONFIRMED, "confirm_after_restart, but "
                                       f"{agent.config.boot_id_file} names no boot"),
                      restore=True)
            return
        while True:
            now = agent.boot_id()
            if now is not None and now != a.boot_id:
                self.verify(a)
                return
            if a.cancel_requested:
                version, note = self.put_back(a)
                self.finish(a, StatusType.CANCELLED, version,
                            error="cancelled while waiting for the restart" + note)
                return
            self.wait(a, 2.0)

    # --- the agent itself ---

    def await_confirmation(self, a: Attempt) -> None:
        deadline = time.time() + self.agent.config.confirm_timeout
        self.journal.step(a, Phase.AWAITING_CONFIRMATION, deadline=deadline)
        self.agent.report(StatusType.PROGRESS, a.correlation_id, percent=90)
        log.info("agent %s installed; restarting to confirm it by %s", a.version,
                 time.strftime("%H:%M:%S", time.localtime(deadline)))
        self.agent.stop(RESTART_EXIT)
        raise _Stopping

    def confirm(self, a: Attempt) -> None:
        """In the new agent: confirm once connected and healthy, before the deadline."""
        assert a.deadline is not None
        while not self.agent.link.connected.wait(0.5):
            if self.agent.stopping.is_set():
                raise _Stopping
            if time.time() > a.deadline:
                break
        if time.time() > a.deadline:
            self.fail(a, UpdateFailure(Reason.NOT_CONFIRMED, f"agent {a.version} did not "
                                       "confirm in time"), restore=True)
            self.agent.stop(RESTART_EXIT)
            raise _Stopping
        try:
            self.health(a)
        except UpdateFailure as failure:
            self.fail(a, failure, restore=True)
            self.agent.stop(RESTART_EXIT)  # the previous agent is back: let it run
            raise _Stopping from None
        self.handler(a).finish(self.step(a))
        self.finish(a, StatusType.SUCCEEDED, a.version, version=a.version)

    # --- rollback commands ---

    def rollback(self, a: Attempt) -> None:
        handler = self.handler(a)
        if a.version == a.from_version and a.phase is Phase.RECEIVED:
            self.finish(a, StatusType.ROLLBACK_SUCCEEDED, a.version, version=a.version)
            return
        self.agent.report(StatusType.STARTED, a.correlation_id, current_version=a.from_version,
                          target_version=a.version, deployment_type=handler.deployment_type)
        self.journal.step(a, Phase.INSTALLING)
        try:
            handler.rollback(self.step(a))
            if handler.component.health_check:
                must(handler.component.health_check, Reason.HEALTH, env=self.step(a).env,
                     timeout=handler.component.timeout)
        except UpdateFailure as failure:
            self.fail(a, failure, restore=False)
            return
        self.finish(a, StatusType.ROLLBACK_SUCCEEDED, a.version, version=a.version)
