"""The words every part uses for a rollout's life: phases, control operations, endings.

The planner sets phases, the API validates control operations and documents both as
enums, the CLI waits for terminal phases and colours bad endings, the operator writes
phases into CR status. One module, in the core and importing nothing, so that a new
phase or operation is added once and every part (and the OpenAPI document) follows.
"""

from __future__ import annotations

from typing import Final, Literal, get_args


class Phase:
    """`status.phase` of a Rollout (DESIGN section 8), CamelCase as Kubernetes asks."""

    PENDING: Final = "Pending"
    WAITING: Final = "Waiting"
    PROGRESSING: Final = "Progressing"
    PAUSED: Final = "Paused"
    COMPLETED: Final = "Completed"
    FAILED: Final = "Failed"
    ABORTED: Final = "Aborted"
    ROLLED_BACK: Final = "RolledBack"
    DELETED: Final = "Deleted"
    """Removed from its home: the last status the engine reports before forgetting it."""


PHASES: Final = (Phase.PENDING, Phase.WAITING, Phase.PROGRESSING, Phase.PAUSED,
                 Phase.COMPLETED, Phase.FAILED, Phase.ABORTED, Phase.ROLLED_BACK)
"""Phases a live Rollout's status can hold (the CRD's enum)."""

ALL_PHASES: Final = (*PHASES, Phase.DELETED)
"""Every phase the API can report, a deleted rollout's included."""

BAD_ENDINGS: Final = frozenset({Phase.FAILED, Phase.ABORTED, Phase.ROLLED_BACK})
"""Terminal phases that are not a success: `status --watch` exits 1 on them."""

TERMINAL_PHASES: Final = frozenset({Phase.COMPLETED, *BAD_ENDINGS})
"""Phases a rollout stays in until its spec changes (what `status --watch` waits for)."""

STOPPED_PHASES: Final = frozenset({Phase.PAUSED, *BAD_ENDINGS})
"""Phases entered with a Warning event unless a planned pause or approval caused them."""

ControlOp = Literal["pause", "resume", "promote", "abort", "rollback"]
"""What a user may ask of a running rollout (API, CLI, operator annotations)."""

CONTROL_OPS: Final[tuple[ControlOp, ...]] = get_args(ControlOp)


class Operation:
    """`UpdateRecord.action`: what one recorded attempt asks of its device."""

    UPDATE: Final = "update"
    ROLLBACK: Final = "rollback"
    """Back to `to_version`, the version the device ran before an update."""
    DOWNLOAD: Final = "download"
    """Fetch and verify the artifact ahead of the install window; installs nothing."""


OPERATIONS: Final = (Operation.UPDATE, Operation.ROLLBACK, Operation.DOWNLOAD)
