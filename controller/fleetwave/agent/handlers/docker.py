"""`handler: docker`: seed 001's container flow, pulling by digest (DESIGN.md 9.1).

    docker pull IMAGE@sha256:…                         (never a mutable tag)
    docker container inspect NAME                      (is there a running version?)
    docker stop NAME
    docker rename NAME NAME-backup-<old version>       (kept for rollback, last three)
    docker run -d --name NAME [runArgs…] IMAGE@sha256:…
    docker inspect -f {{.State.Running}} NAME          (health: the container runs)

On failure after the stop: `docker rm -f NAME`, `docker rename NAME-backup-<old> NAME`,
`docker start NAME`. A `rollback` command swaps a kept backup container back in the same
way. Backups older than the last three are removed with `docker rm`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step, run
from fleetwave.agent.journal import write_atomic

KEEP: Final = 3
DOCKER: Final = "docker"


class DockerHandler(Handler):
    name = "docker"
    deployment_type = "docker"

    @property
    def container(self) -> str:
        return str(self.component.options["container"])

    def backup_name(self, version: str) -> str:
        return f"{self.container}-backup-{version}"

    def needs_artifact(self) -> bool:
        return False  # the image comes from the registry, by digest

    def containers(self, version: str) -> list[dict[str, Any]]:
        return [{"name": self.container, "running": True,
                 "image": f"{self.component.options['image']}:{version}"}]

    def install(self, step: Step) -> None:
        if not step.digest or not step.digest.startswith("sha256:"):
            raise UpdateFailure(Reason.NO_ARTIFACT, "a docker update needs artifact.digest "
                                "(sha256:…): images are pulled by digest, never by tag")
        reference = f"{self.component.options['image']}@{step.digest}"
        step.mark("pull")
        self.program([DOCKER, "pull", reference], Reason.INSTALL, step)
        exists = run([DOCKER, "container", "inspect", self.container]).code == 0
        if exists:
            step.mark("stop")
            self.program([DOCKER, "stop", self.container], Reason.INSTALL, step)
            self._set_aside(step.from_version or "unknown", step)
        step.mark("run")
        run_args = [str(a) for a in self.component.options.get("runArgs", [])]
        self.program([DOCKER, "run", "-d", "--name", self.container, *run_args, reference],
                     Reason.INSTALL, step)

    def check(self, step: Step) -> None:
        out = self.program([DOCKER, "inspect", "-f", "{{.State.Running}}", self.container],
                           Reason.HEALTH, step)
        if out.strip() != "true":
            raise UpdateFailure(Reason.HEALTH, f"container {self.container} is not running",
                                1)

    def restore(self, step: Step) -> bool:
        if "run" in step.marks:
            run([DOCKER, "rm", "-f", self.container])
        if "rename" in step.marks:
            self.program([DOCKER, "rename", self.backup_name(step.from_version or "unknown"),
                          self.container], Reason.ROLLBACK, step)
            self._record(remove=step.from_version or "unknown")
        if "stop" in step.marks:
            self.program([DOCKER, "start", self.container], Reason.ROLLBACK, step)
        return bool({"run", "rename", "stop"} & set(step.marks))

    def rollback(self, step: Step) -> None:
        if step.version not in self._backups():
            raise UpdateFailure(Reason.NO_BACKUP, f"no backup container "
                                f"{self.backup_name(step.version)} is kept")
        step.mark("stop")
        self.program([DOCKER, "stop", self.container], Reason.ROLLBACK, step)
        self._set_aside(step.from_version or "unknown", step)
        self.program([DOCKER, "rename", self.backup_name(step.version), self.container],
                     Reason.ROLLBACK, step)
        self._record(remove=step.version)
        self.program([DOCKER, "start", self.container], Reason.ROLLBACK, step)
        self.check(step)

    def finish(self, step: Step) -> None:
        backups = self._backups()
        for old in backups[:-KEEP]:
            run([DOCKER, "rm", self.backup_name(old)])
            self._record(remove=old)

    def _set_aside(self, version: str, step: Step) -> None:
        if version in self._backups():
            run([DOCKER, "rm", "-f", self.backup_name(version)])
            self._record(remove=version)
        step.mark("rename")
        self.program([DOCKER, "rename", self.container, self.backup_name(version)],
                     Reason.INSTALL, step)
        self._record(add=version)

    def _backups(self) -> list[str]:
        try:
            value = json.loads((self.workdir / "backups.json").read_text())
        except (OSError, ValueError):
            return []
        return [str(v) for v in value] if isinstance(value, list) else []

    def _record(self, *, add: str | None = None, remove: str | None = None) -> None:
        backups = [v for v in self._backups() if v not in (add, remove)]
        if add is not None:
            backups.append(add)
        write_atomic(self.workdir / "backups.json", json.dumps(backups).encode())
