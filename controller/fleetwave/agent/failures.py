"""Why an update did not succeed: one vocabulary for every `reason` the agent reports.

The controller stores `reason` as given and operators filter on it, so the values are
named once here. Every handler and the download raise `UpdateFailure`; the agent turns it
into an `update_failed` (or `rollback_failed`) status with the same reason.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    CHECKSUM = "checksum"
    """The artifact's SHA-256 is not the one the command names; the installer never ran."""
    DOWNLOAD = "download"
    TOO_LARGE = "too_large"
    DISK_FULL = "disk_full"
    NO_ARTIFACT = "no_artifact"
    INSTALL = "install_failed"
    HEALTH = "health_check"
    INTERRUPTED = "interrupted"
    """The agent died mid-install (kill -9, power loss); the previous version was put back."""
    NOT_CONFIRMED = "not_confirmed"
    """A new agent never confirmed within confirmTimeout; the previous one was restored."""
    UNKNOWN_COMPONENT = "unknown_component"
    NO_BACKUP = "no_backup"
    ROLLBACK = "rollback_failed"
    CANCELLED = "cancelled"


class UpdateFailure(Exception):
    """A step of an update failed; `reason`, the message and the exit code are reported."""

    def __init__(self, reason: Reason, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_code = exit_code
