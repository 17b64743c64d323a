"""`handler: systemd`: seed 001's binary-and-unit flow.

    (download and verify the binary)
    <staged binary> --version                (must run and name the target version)
    systemctl stop UNIT
    copy BINARY -> stateDir/components/<name>/backups/<old version>
    install the staged binary over BINARY    (rename(2) of a copy beside it)
    systemctl start UNIT
    systemctl is-active UNIT                 (health)

On failure after the stop: `systemctl stop UNIT`, restore the backup, `systemctl start
UNIT`. A `rollback` command puts a kept backup back the same way; the last three backups
are kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step, run
from fleetwave.agent.journal import fsync_directory

KEEP: Final = 3
SYSTEMCTL: Final = "systemctl"


class SystemdHandler(Handler):
    name = "systemd"
    deployment_type = "systemd"

    @property
    def unit(self) -> str:
        return str(self.component.options["unit"])

    @property
    def binary(self) -> Path:
        return Path(str(self.component.options["binary"]))

    @property
    def backups(self) -> Path:
        return self.workdir / "backups"

    def install(self, step: Step) -> None:
        if step.artifact is None:
            raise UpdateFailure(Reason.NO_ARTIFACT, "the systemd handler needs an artifact "
                                "(the binary)")
        staged = self.workdir / f"staged-{step.version}"
        shutil.copyfile(step.artifact, staged)
        staged.chmod(0o755)
        out = self.program([str(staged), "--version"], Reason.INSTALL, step)
        if step.version not in out:
            raise UpdateFailure(Reason.INSTALL, f"{staged.name} --version printed "
                                f"{out[:200]!r}, not version {step.version}", 1)
        step.mark("stop")
        self.program([SYSTEMCTL, "stop", self.unit], Reason.INSTALL, step)
        self._back_up(step.from_version or "unknown")
        step.mark("install")
        self._put(staged, self.binary)
        step.mark("start")
        self.program([SYSTEMCTL, "start", self.unit], Reason.INSTALL, step)

    def check(self, step: Step) -> None:
        self.program([SYSTEMCTL, "is-active", self.unit], Reason.HEALTH, step)

    def restore(self, step: Step) -> bool:
        if "stop" not in step.marks:
            return False  # nothing on the device changed yet
        run([SYSTEMCTL, "stop", self.unit])
        backup = self.backups / (step.from_version or "unknown")
        if "install" in step.marks and backup.is_file():
            self._put(backup, self.binary)
        self.program([SYSTEMCTL, "start", self.unit], Reason.ROLLBACK, step)
        return True

    def rollback(self, step: Step) -> None:
        backup = self.backups / step.version
        if not backup.is_file():
            raise UpdateFailure(Reason.NO_BACKUP, f"no backup of {step.version} in "
                                f"{self.backups}")
        step.mark("stop")
        self.program([SYSTEMCTL, "stop", self.unit], Reason.ROLLBACK, step)
        self._back_up(step.from_version or "unknown")
        self._put(backup, self.binary)
        self.program([SYSTEMCTL, "start", self.unit], Reason.ROLLBACK, step)
        self.check(step)

    def finish(self, step: Step) -> None:
        (self.workdir / f"staged-{step.version}").unlink(missing_ok=True)
        kept = sorted(self.backups.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)

    def _back_up(self, version: str) -> None:
        if self.binary.is_file():
            self.backups.mkdir(parents=True, exist_ok=True)
            self._put(self.binary, self.backups / version)

    @staticmethod
    def _put(source: Path, target: Path) -> None:
        """Copy `source` over `target` atomically, executable."""
        fresh = target.with_name(f".{target.name}.fleetwave-new")
        shutil.copyfile(source, fresh)
        fresh.chmod(0o755)
        with open(fresh, "rb") as f:
            os.fsync(f.fileno())
        os.replace(fresh, target)
        fsync_directory(target.parent)
