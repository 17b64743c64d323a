"""`handler: files`: a directory replaced atomically, the last three versions kept (seed 002).

Layout under `files.target`:

    versions/1.0.6/…     one directory per version, unpacked from the artifact (a tar)
    current -> versions/1.0.6

The application reads `target/current`. A new version is unpacked beside the others, then
`current` is pointed at it with one rename(2) of a fresh symlink, so a reader (or a crash)
sees the old tree or the new one, never a mix. Restore and rollback point `current` back
at a kept version; `finish` keeps the three most recently used versions. The optional
`install` and `rollback` programs run after the swap (e.g. to restart the application).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Final

from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step
from fleetwave.agent.journal import fsync_directory

KEEP: Final = 3
_SAFE_VERSION: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


class FilesHandler(Handler):
    name = "files"
    deployment_type = "files"

    @property
    def target(self) -> Path:
        return Path(str(self.component.options["target"]))

    @property
    def current(self) -> Path:
        return self.target / "current"

    def version_dir(self, version: str) -> Path:
        if not _SAFE_VERSION.match(version) or ".." in version:
            raise UpdateFailure(Reason.INSTALL, f"version {version!r} cannot name a directory")
        return self.target / "versions" / version

    def running_version(self) -> str | None:
        try:
            link = os.readlink(self.current)
        except OSError:
            return None
        parent, _, name = link.rstrip("/").rpartition("/")
        return name if parent.endswith("versions") else None

    def install(self, step: Step) -> None:
        if step.artifact is None:
            raise UpdateFailure(Reason.NO_ARTIFACT, "the files handler needs an artifact (a tar)")
        directory = self.version_dir(step.version)
        if not directory.is_dir():
            step.mark("unpack")
            self._unpack(step.artifact, directory)
        step.mark("swap")
        self._point_at(step.version)
        if self.component.install:
            step.mark("hook")
            self.program(self.component.install, Reason.INSTALL, step)

    def restore(self, step: Step) -> bool:
        if "swap" not in step.marks:
            return False  # `current` was never moved
        previous = step.from_version
        if previous is not None and self.version_dir(previous).is_dir():
            self._point_at(previous)
        else:
            self.current.unlink(missing_ok=True)  # there were no files before this update
            fsync_directory(self.target)
        if self.component.rollback:
            self.program(self.component.rollback, Reason.ROLLBACK,
                         Step(version=previous or "", from_version=step.version))
        return True

    def rollback(self, step: Step) -> None:
        if not self.version_dir(step.version).is_dir():
            raise UpdateFailure(Reason.NO_BACKUP, f"version {step.version} is not among the "
                                f"kept versions in {self.target / 'versions'}")
        step.mark("swap")
        self._point_at(step.version)
        if self.component.rollback:
            self.program(self.component.rollback, Reason.ROLLBACK, step)

    def finish(self, step: Step) -> None:
        versions = self.target / "versions"
        kept = [d for d in versions.iterdir() if d.is_dir() and not d.name.startswith(".")]
        kept.sort(key=lambda d: (d.name == step.version, d.stat().st_mtime), reverse=True)
        for old in kept[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in versions.glob(".*.partial"):
            shutil.rmtree(partial, ignore_errors=True)

    def _unpack(self, artifact: Path, directory: Path) -> None:
        partial = directory.with_name(f".{directory.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            with tarfile.open(artifact) as tar:
                tar.extractall(partial, filter="data")
        except tarfile.TarError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise UpdateFailure(Reason.INSTALL, f"artifact is not a usable tar archive: "
                                f"{exc}") from exc
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UpdateFailure(Reason.DISK_FULL, f"no space left to unpack into "
                                    f"{directory.parent}") from exc
            raise UpdateFailure(Reason.INSTALL, f"cannot unpack the artifact: {exc}") from exc
        os.rename(partial, directory)
        fsync_directory(directory.parent)

    def _point_at(self, version: str) -> None:
        """`current` -> versions/<version>, by renaming a new symlink over the old one."""
        directory = self.version_dir(version)
        fresh = self.target / ".current.new"
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        os.symlink(f"versions/{version}", fresh)
        os.replace(fresh, self.current)
        fsync_directory(self.target)
        os.utime(directory)  # most recently used: `finish` keeps it
