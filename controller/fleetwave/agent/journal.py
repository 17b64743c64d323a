"""The agent's write-ahead journal in `stateDir`: what it has promised and how far it got.

Every step of an update is written here before it is taken (temp file, fsync, rename, fsync
of the directory), so a kill -9 or a power cut leaves either the old or the new journal,
never half of one. On start the agent reads it and resumes each open attempt from the
phase it reached (`fleetwave.agent.device.Agent.resume`). The journal also holds the
`Executed` ledger that `admit` needs (the newest release per component: replays stay
refused after a reboot), the versions the agent has seen running, and the final status of
recent correlation ids (repeated when a command arrives again).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from fleetwave.protocol.admission import Executed

FINISHED_KEPT: Final = 64
"""Final statuses remembered; a controller re-publishes only the newest attempts."""


class Phase(StrEnum):
    RECEIVED = "received"
    SCHEDULED = "scheduled"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    """The handler is changing the device: after a crash here the previous version goes back."""
    INSTALLED = "installed"
    """The handler finished; the health check decides (after a restart too)."""
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    """Self-update: the new agent must start and confirm before `deadline`."""
    AWAITING_RESTART = "awaiting_restart"
    """`confirm_after_restart`: installed; success is reported only once the device runs
    under another boot id than `boot_id` and the health check passes there."""


@dataclass
class Attempt:
    """One update or rollback the agent accepted and has not finished."""

    correlation_id: str
    component: str
    action: str
    version: str
    release: int
    from_version: str | None = None
    artifact_url: str | None = None
    sha256: str | None = None
    digest: str | None = None
    scheduled_time: str | None = None
    force: bool = False
    phase: Phase = Phase.RECEIVED
    marks: list[str] = field(default_factory=list)
    """Sub-steps the handler completed (`stopped`, `renamed`, …): what a restore undoes."""
    cancel_requested: bool = False
    deadline: float | None = None
    artifact_path: str | None = None
    confirm_after_restart: bool = False
    boot_id: str | None = None
    """The boot the install ran under (`confirm_after_restart`)."""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Attempt:
        known = {f.name for f in fields(cls)}
        attempt = cls(**{k: v for k, v in body.items() if k in known})
        attempt.phase = Phase(attempt.phase)
        return attempt


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalError(RuntimeError):
    """The journal file exists but cannot be read; the agent will not guess what it held."""


class Journal:
    """The journal file and its contents; callers hold `lock` across read-modify-save."""

    FILE: Final = "journal.json"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILE
        self.lock = threading.RLock()
        self.executed: dict[str, Executed] = {}
        self.versions: dict[str, str] = {}
        self.attempts: list[Attempt] = []
        self.finished: dict[str, dict[str, Any]] = {}
        self.last_final: str | None = None

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        state_dir.mkdir(parents=True, exist_ok=True)
        journal = cls(state_dir)
        journal.reload()
        return journal

    def reload(self) -> None:
        """Read the file again (the supervisor watches a journal another process writes)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            body = json.loads(raw)
            executed = {k: Executed(int(v["release"]), str(v["correlation_id"]))
                        for k, v in body.get("executed", {}).items()}
            attempts = [Attempt.from_json(a) for a in body.get("attempts", [])]
        except (ValueError, TypeError, KeyError) as exc:
            raise JournalError(f"{self.path} is damaged ({exc}); move it away to start "
                               "afresh (replay protection restarts from zero)") from exc
        with self.lock:
            self.executed = executed
            self.versions = {str(k): str(v) for k, v in body.get("versions", {}).items()}
            self.attempts = attempts
            self.finished = dict(body.get("finished", {}))
            self.last_final = body.get("last_final")

    def save(self) -> None:
        with self.lock:
            body = {"executed": {k: asdict(v) for k, v in self.executed.items()},
                    "versions": self.versions,
                    "attempts": [asdict(a) for a in self.attempts],
                    "finished": self.finished, "last_final": self.last_final}
            write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode())

    def attempt(self, correlation_id: str) -> Attempt | None:
        with self.lock:
            return next((a for a in self.attempts if a.correlation_id == correlation_id), None)

    def step(self, attempt: Attempt, phase: Phase | None = None, *, mark: str | None = None,
             **changes: Any) -> None:
        """Record progress on `attempt` durably before the agent acts on it."""
        with self.lock:
            if phase is not None:
                attempt.phase = phase
            if mark is not None and mark not in attempt.marks:
                attempt.marks.append(mark)
            for key, value in changes.items():
                setattr(attempt, key, value)
            self.save()

    def finish(self, attempt: Attempt, final: dict[str, Any], version: str | None) -> None:
        """Close `attempt` with its final status (and the version now running), durably."""
        with self.lock:
            with contextlib.suppress(ValueError):
                self.attempts.remove(attempt)
            if version is not None:
                self.versions[attempt.component] = version
            self.remember(attempt.correlation_id, final)

    def remember(self, correlation_id: str, final: dict[str, Any]) -> None:
        with self.lock:
            if correlation_id:
                self.finished.pop(correlation_id, None)
                self.finished[correlation_id] = final
                while len(self.finished) > FINISHED_KEPT:
                    self.finished.pop(next(iter(self.finished)))
                self.last_final = correlation_id
            self.save()
