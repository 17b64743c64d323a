"""Messages exchanged with devices, as immutable values.

Parsing lives beside these models (`fleetwave.protocol.parsing`); the MQTT
layer only moves bytes. Timestamps on the wire are epoch milliseconds; inside
fleetwave time is epoch seconds as float (`received_at`), taken from our clock,
never the device's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class StatusType(StrEnum):
    COMMAND_RECEIVED = "update_command_received"
    SCHEDULED = "update_scheduled"
    STARTED = "update_started"
    PROGRESS = "update_progress"
    SUCCEEDED = "update_succeeded"
    FAILED = "update_failed"
    CANCELLED = "update_cancelled"
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"


@dataclass(frozen=True, slots=True)
class Status:
    """Update progress reported by a device on its `status` topic."""

    device: str
    type: StatusType
    correlation_id: str | None
    """None for devices built for the older protocol: matched to the one open update."""
    received_at: float
    timestamp: int | None = None
    version: str | None = None
    current_version: str | None = None
    target_version: str | None = None
    deployment_type: str | None = None
    percent: int | None = None
    reason: str | None = None
    error: str | None = None
    exit_code: int | None = None
    boot_id: str | None = None
    """The device's boot when it sent this: what `confirmAfterRestart` compares against."""


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str | None = None
    running: bool = True


@dataclass(frozen=True, slots=True)
class ReportedState:
    """A device's retained self-description on its `state` topic."""

    device: str
    versions: Mapping[str, str]
    received_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    deployment_type: str | None = None
    ip: str | None = None
    name: str | None = None
    containers: tuple[Container, ...] = ()
    timestamp: int | None = None
    boot_id: str | None = None
    """Changes on every boot (Linux: /proc/sys/kernel/random/boot_id): a restart seen."""


@dataclass(frozen=True, slots=True)
class Online:
    """A device's retained liveness flag (its MQTT last will publishes `false`)."""

    device: str
    online: bool
    received_at: float
    timestamp: int | None = None


CommandAction = Literal["update", "cancel", "rollback"]


@dataclass(frozen=True, slots=True)
class Command:
    """What the controller asks of a device; published retained, QoS 1, signed.

    `device`, `release` and `expires_at` bind a command to one device, one attempt and a
    time (DESIGN.md 9.1); the signature over them is added when it is published
    (`fleetwave.protocol.signing.SigningKey.sign` over `to_body()`).
    """

    action: CommandAction
    component: str
    version: str
    correlation_id: str
    timestamp: int
    scheduled_time: str | None = None
    force: bool = False
    artifact_url: str | None = None
    artifact_sha256: str | None = None
    artifact_digest: str | None = None
    """`sha256:…` of a container image: devices pull by digest, never by a mutable tag."""
    device: str | None = None
    release: int | None = None
    """Strictly increases per new attempt on one device and component; a re-publish of the
    same attempt keeps it, so a device refuses replays of older commands."""
    expires_at: str | None = None
    """RFC 3339 UTC; a device refuses the command after it."""
    downgrade: bool = False
    """Set only where a Rollout itself declares the lower version (a revert, a pin)."""
    confirm_after_restart: bool = False
    """`health.confirmAfterRestart`: report success only once the new version runs after a
    restart (sent only when true, so other commands keep their exact signed bytes)."""

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": self.action,
            "version": self.version,
            "component": self.component,
            "correlation_id": self.correlation_id,
            "scheduled_time": self.scheduled_time,
            "force": self.force,
            "timestamp": self.timestamp,
        }
        if self.artifact_url is not None or self.artifact_digest is not None:
            artifact: dict[str, Any] = {}
            if self.artifact_url is not None:
                artifact["url"] = self.artifact_url
                artifact["sha256"] = self.artifact_sha256
            if self.artifact_digest is not None:
                artifact["digest"] = self.artifact_digest
            body["artifact"] = artifact
        if self.device is not None:
            body["device"] = self.device
        if self.release is not None:
            body["release"] = self.release
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        if self.downgrade:
            body["downgrade"] = True
        if self.confirm_after_restart:
            body["confirm_after_restart"] = True
        return body

    def to_payload(self) -> bytes:
        """The unsigned wire form (tests and devices of the older protocol)."""
        return json.dumps(self.to_body(), separators=(",", ":")).encode()


DeviceMessage = Status | ReportedState | Online
