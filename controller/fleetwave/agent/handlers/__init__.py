"""How a component is installed, checked and put back: one class per `handler:` value.

A handler is told the target and the previous version, the verified artifact and a
`mark` callback. It calls `mark(name)` *before* each step that changes the device
(stop, rename, swap, …); the agent journals the mark first, so after a crash `restore`
knows which steps may have happened and undoes exactly those. Handlers raise
`UpdateFailure`; they never report anything themselves.

Writing a new handler: subclass `Handler`, implement `install`, `restore` and `rollback`
(and `check`/`finish` if it has a built-in health test or backups to prune), and add it
to `HANDLERS`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

from fleetwave.agent.config import Component
from fleetwave.agent.failures import Reason, UpdateFailure

log = logging.getLogger(__name__)

OUTPUT_KEPT: Final = 400
"""Characters of a failing program's output kept in the reported error."""


@dataclass(frozen=True)
class Step:
    """One install, restore or rollback as a handler sees it."""

    version: str
    """The version to end on (for `restore`: the version that was being installed)."""
    from_version: str | None
    artifact: Path | None = None
    digest: str | None = None
    marks: Sequence[str] = ()
    mark: Callable[[str], None] = field(default=lambda _name: None)

    @property
    def env(self) -> dict[str, str]:
        env = {"FLEETWAVE_VERSION": self.version,
               "FLEETWAVE_FROM_VERSION": self.from_version or ""}
        if self.artifact is not None:
            env["FLEETWAVE_ARTIFACT"] = str(self.artifact)
        return env


@dataclass(frozen=True)
class Result:
    code: int
    output: str


def _find_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: programs outlive a killed agent
        return None


_PRCTL: Final = _find_prctl()
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A program the agent started dies with it (kill -9 included): no orphan installer
    keeps changing the device while the restarted agent restores the previous version.
    (prctl is looked up before the fork: nothing is loaded in the child.)"""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        timeout: float = 600.0) -> Result:
    """Run a program to completion; its output goes to the log and into `Result`."""
    full_env = {**os.environ, **(env or {})}
    log.info("running %s", " ".join(argv))
    try:
        proc = subprocess.Popen(list(argv), env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509
    except OSError as exc:
        return Result(127, f"cannot run {argv[0]}: {exc.strerror or exc}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return Result(124, f"{argv[0]} did not finish within {timeout:g} s")
    text = out.decode(errors="replace").strip()
    if text:
        log.info("%s: %s", argv[0], text[-2000:])
    return Result(proc.returncode, text)


def must(argv: Sequence[str], reason: Reason, *, env: Mapping[str, str] | None = None,
         timeout: float = 600.0) -> str:
    """Run a program that has to succeed; its output, or `UpdateFailure` with its code."""
    result = run(argv, env=env, timeout=timeout)
    if result.code != 0:
        tail = result.output[-OUTPUT_KEPT:]
        raise UpdateFailure(reason, f"{' '.join(argv)} exited with {result.code}"
                            + (f": {tail}" if tail else ""), result.code)
    return result.output


class Handler:
    """Installs one component; subclasses say how."""

    name: ClassVar[str] = ""
    deployment_type: ClassVar[str] = "script"

    def __init__(self, component: Component, workdir: Path) -> None:
        self.component = component
        self.workdir = workdir
        """`stateDir/components/<name>`: the handler's own files (backups, staging)."""

    def running_version(self) -> str | None:
        """The version the device itself shows (a `current` link); None: ask the journal."""
        return None

    def needs_artifact(self) -> bool:
        return True

    def containers(self, version: str) -> list[dict[str, Any]]:
        """What the reported state lists under `containers` (docker only)."""
        return []

    def install(self, step: Step) -> None:
        raise NotImplementedError

    def check(self, step: Step) -> None:
        """The handler's built-in health test after install or restore."""

    def restore(self, step: Step) -> bool:
        """Put `step.from_version` back after a failed or interrupted `install`; False when
        nothing on the device had changed yet (then there is nothing to check either)."""
        raise NotImplementedError

    def rollback(self, step: Step) -> None:
        """A `rollback` command: go back from `step.from_version` to `step.version`."""
        raise NotImplementedError

    def finish(self, step: Step) -> None:
        """After a confirmed install: prune backups beyond the last three."""

    def program(self, argv: Sequence[str], reason: Reason, step: Step) -> str:
        return must(argv, reason, env=step.env, timeout=self.component.timeout)


def make_handler(component: Component, state_dir: Path) -> Handler:
    from fleetwave.agent.handlers.docker import DockerHandler
    from fleetwave.agent.handlers.files import FilesHandler
    from fleetwave.agent.handlers.script import ScriptHandler
    from fleetwave.agent.handlers.systemd import SystemdHandler

    kinds: dict[str, type[Handler]] = {h.name: h for h in (
        ScriptHandler, FilesHandler, DockerHandler, SystemdHandler)}
    workdir = state_dir / "components" / component.name
    workdir.mkdir(parents=True, exist_ok=True)
    return kinds[component.handler](component, workdir)
