"""`handler: script`: the operator's own programs install, check and roll back.

`install` runs with FLEETWAVE_ARTIFACT (the verified file), FLEETWAVE_VERSION and
FLEETWAVE_FROM_VERSION; `rollback` (optional) runs with FLEETWAVE_VERSION set to the
version to go back to. Without a rollback program a failed install cannot be undone, and
the agent says so in the reported error rather than claiming the old version.
"""

from __future__ import annotations

from fleetwave.agent.failures import Reason, UpdateFailure
from fleetwave.agent.handlers import Handler, Step


class ScriptHandler(Handler):
    name = "script"
    deployment_type = "script"

    def needs_artifact(self) -> bool:
        return False  # the program may fetch what it needs itself

    def install(self, step: Step) -> None:
        step.mark("install")
        self.program(self.component.install, Reason.INSTALL, step)

    def restore(self, step: Step) -> bool:
        if not self.component.rollback:
            raise UpdateFailure(Reason.NO_BACKUP, f"no rollback program configured for "
                                f"{self.component.name}: {step.from_version} not restored")
        back = Step(version=step.from_version or "", from_version=step.version)
        self.program(self.component.rollback, Reason.ROLLBACK, back)
        return True

    def rollback(self, step: Step) -> None:
        if not self.component.rollback:
            raise UpdateFailure(Reason.NO_BACKUP, f"no rollback program configured for "
                                f"{self.component.name}")
        self.program(self.component.rollback, Reason.ROLLBACK, step)
