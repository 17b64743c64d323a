"""One update attempt of one device, as the store keeps it and the planner reads it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UpdateState(StrEnum):
    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    AWAITING_RESTART = "awaiting_restart"
    """The device reported success of a `confirmAfterRestart` update: it counts once a
    state shows the new version under another boot id (RAUC's mark-good after boot)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


OPEN_STATES = frozenset({UpdateState.PENDING, UpdateState.ACKNOWLEDGED, UpdateState.SCHEDULED,
                         UpdateState.IN_PROGRESS, UpdateState.AWAITING_RESTART})
TERMINAL_STATES = frozenset({UpdateState.SUCCEEDED, UpdateState.FAILED, UpdateState.TIMEOUT,
                             UpdateState.CANCELLED, UpdateState.ROLLED_BACK})

RANK = {
    UpdateState.PENDING: 0,
    UpdateState.ACKNOWLEDGED: 1,
    UpdateState.SCHEDULED: 2,
    UpdateState.IN_PROGRESS: 3,
    UpdateState.AWAITING_RESTART: 4,
    UpdateState.SUCCEEDED: 5,
    UpdateState.FAILED: 5,
    UpdateState.TIMEOUT: 5,
    UpdateState.CANCELLED: 5,
    UpdateState.ROLLED_BACK: 6,
}
"""Records only move to a higher rank; equal ranks only within the same state."""


class Health(StrEnum):
    """Judgement after success: unknown until `stableFor` passed or a check failed."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Reason:
    """Reasons recorded on update records (CamelCase, stable: users filter on them)."""

    UNREACHABLE = "Unreachable"
    ACK_TIMEOUT = "AckTimeout"
    UPDATE_TIMEOUT = "UpdateTimeout"
    SUPERSEDED = "Superseded"
    CANCELLED_BY_USER = "CancelledByUser"
    ROLLOUT_DELETED = "RolloutDeleted"
    UNHEALTHY = "Unhealthy"
    OFFLINE_AFTER_UPDATE = "OfflineAfterUpdate"
    CHECK_FAILED = "CheckFailed"
    DEVICE_REPORTED_FAILURE = "DeviceReportedFailure"
    CONFIRMED_BY_REPORTED_STATE = "ConfirmedByReportedState"
    """Succeeded without its status: the device's retained state shows the target version."""
    CONFIRMED_AFTER_RESTART = "ConfirmedAfterRestart"
    """`confirmAfterRestart`: a state showed the target version under a new boot id."""
    NO_RESTART = "NoRestart"
    """`confirmAfterRestart`: no state showed the target version after a restart within
    updateTimeout (or the device reports no boot id, so a restart cannot be told)."""


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """One attempt; a retry is a new record with `attempt + 1` and a new correlation id.

    Times are epoch seconds (float, UTC) from the controller's clock.
    """

    id: str
    device: str
    rollout: str
    component: str
    to_version: str
    state: UpdateState
    attempt: int
    correlation_id: str
    created_at: float
    updated_at: float
    from_version: str | None = None
    generation: int = 1
    triggered_by: str = "controller"
    action: str = "update"
    """`update`, or `rollback` for a record that puts the device back on from_version."""
    reason: str | None = None
    error: str | None = None
    exit_code: int | None = None
    progress: int | None = None
    health: Health = Health.UNKNOWN
    sent_at: float | None = None
    acknowledged_at: float | None = None
    scheduled_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    health_at: float | None = None
    rolled_back_at: float | None = None
    scheduled_time: str | None = None
    force: bool = False
    release: int = 0
    """The `release` every command of this attempt carries (DESIGN.md 9.1): fixed when the
    record is created (`next_release`), so a re-publish, even after a restart, keeps it."""
    confirm_after_restart: bool = False
    """The rollout's `health.confirmAfterRestart`, fixed at creation: success counts only
    from a state under another boot id than `boot_id`."""
    boot_id: str | None = None
    """The device's boot id when it acknowledged (or started) this attempt."""

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def next_release(created_at: float, highest: int | None = None) -> int:
    """The release of a new attempt: the creation time in milliseconds, or one above the
    highest release already given to that device and component, whichever is larger.

    Time keeps it increasing across restarts, replicas and a lost store; `highest + 1`
    keeps it strictly increasing when a clock steps back or two attempts share a
    millisecond. A device refuses any command whose release is below one it executed.
    """
    release = int(created_at * 1000)
    return release if highest is None or release > highest else highest + 1


class DecisionKind(StrEnum):
    """What the controller (not the device) decides about an update record."""

    SENT = "sent"
    """The command was (re)published: sets sent_at; no state change."""
    TIMEOUT = "timeout"
    """Ack or update timeout: -> timeout (reason says which, or Unreachable)."""
    CANCEL = "cancel"
    """Superseded, deleted rollout or a user's cancel: open -> cancelled."""
    HEALTHY = "healthy"
    """Succeeded and stable for stableFor with passing checks."""
    UNHEALTHY = "unhealthy"
    """Succeeded, then a check failed or the device went silent."""
    ROLLED_BACK = "rolled_back"
    """A terminal record whose device was put back on from_version."""


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    at: float
    reason: str | None = None
    message: str | None = None
