"""The command that carries one update attempt to its device (DESIGN.md 9.1).

One builder for every command the controller sends (the planner's update, rollback and
cancel, a deleted rollout's cancels, a user's cancel), so each carries `device`,
`release` and `expires_at` the same way. The MQTT link signs what this builds; nothing
here knows the key.

Expiry: a command expires `lifetime` seconds after it is built, which for updates and
rollbacks is the rollout's `ackTimeout`. That is as long as the controller itself waits
for the device to acknowledge: after that it has timed the attempt out and cleared the
retained command, so a device that connects later (or an attacker replaying a copy) must
not act on it. While the attempt waits, every re-publish builds it again, with a fresh
expiry and a fresh signature, and the same release.

Pure: the clock is an argument.
"""

from __future__ import annotations

import math
from typing import Final

from fleetwave.protocol.admission import format_time
from fleetwave.protocol.messages import Command, CommandAction
from fleetwave.protocol.versions import is_lower
from fleetwave.resources.model import Artifact
from fleetwave.updates.model import UpdateRecord

CANCEL_LIFETIME: Final = 300.0
"""Seconds a cancel outside a rollout's pass (a user's, a deleted rollout's) stays valid:
its retained copy is cleared right after, so it only matters to a device online now."""


def command_for(record: UpdateRecord, action: CommandAction, now: float, lifetime: float,
                *, artifact: Artifact | None = None) -> Command:
    """The signed-to-be command of `record`'s attempt, built at `now`.

    `downgrade` is set only on an update whose own target, which the Rollout's spec
    declares, is lower than what the device reported when the attempt began; a device
    refuses any other update to a lower version.
    """
    update = action == "update"
    return Command(
        action=action, component=record.component, version=record.to_version,
        correlation_id=record.correlation_id, timestamp=int(now * 1000),
        force=record.force, scheduled_time=record.scheduled_time if update else None,
        artifact_url=artifact.url if update and artifact else None,
        artifact_sha256=artifact.sha256 if update and artifact else None,
        artifact_digest=artifact.digest if update and artifact else None,
        device=record.device, release=record.release,
        # Rounded up: `format_time` keeps whole seconds, and a short ackTimeout must not
        # lose most of its second.
        expires_at=format_time(math.ceil(now + lifetime)),
        downgrade=(update and record.from_version is not None
                   and is_lower(record.to_version, record.from_version)),
        confirm_after_restart=update and record.confirm_after_restart,
    )
