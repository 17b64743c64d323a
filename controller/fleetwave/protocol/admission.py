"""The device-side rules for accepting a command (DESIGN.md 9.1): one verification path.

The simulator and the reference agent both call `admit` on every payload that arrives on
their `update` topic; neither has rules of its own. A command is accepted only when its
signature verifies against a trusted key, it names this device, it has not expired, its
`release` is above the highest this device has executed for the component, and it is not
an unmarked move to a lower version. What a device remembers between commands (the
highest release per component, and the attempt it belongs to) is `Executed`; the caller
stores it, before acting, in memory (simulator) or in its journal (agent).

Pure: the clock and the memory are arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from fleetwave.protocol.messages import Command
from fleetwave.protocol.parsing import CommandError, command_from_body
from fleetwave.protocol.signing import SignatureError, TrustedKeys
from fleetwave.protocol.versions import is_lower

MAX_COMMAND_BYTES: Final = 16384
"""A command is a few hundred bytes; anything near this bound is not one of ours."""

RefusalReason = Literal["rejected", "downgrade"]
"""The `reason` of the `update_failed` status a refusal is reported with."""


@dataclass(frozen=True, slots=True)
class Executed:
    """The newest attempt a device started for one component."""

    release: int
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    command: Command
    keyid: str

    @property
    def executed(self) -> Executed:
        """What to remember (journal first) before acting on the command."""
        assert self.command.release is not None
        return Executed(self.command.release, self.command.correlation_id)


@dataclass(frozen=True, slots=True)
class Repeated:
    """The attempt the device already started or finished: repeat its status, do nothing."""

    command: Command


@dataclass(frozen=True, slots=True)
class Refused:
    """Report as `update_failed` with `reason` and `error=cause`; never act on it."""

    reason: RefusalReason
    cause: str
    correlation_id: str | None = None
    component: str | None = None


Verdict = Accepted | Repeated | Refused


def parse_time(text: str) -> datetime | None:
    """RFC 3339 with an explicit offset (or `Z`), as aware UTC; None when it is not."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with a `Z`, to the second: the form the controller writes."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def admit(payload: bytes, *, device: str, trusted: TrustedKeys, now: float,
          executed: Mapping[str, Executed], running: Mapping[str, str]) -> Verdict:
    """Decide what a device does with `payload`; never raises on anything it receives.

    `executed`: component -> the newest attempt started; `running`: component -> version.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        return Refused("rejected", f"command larger than {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return Refused("rejected", "command is not JSON")
    if type(body) is not dict:
        return Refused("rejected", "command is not a JSON object")
    cid = body.get("correlation_id") if isinstance(body.get("correlation_id"), str) else None
    component = body.get("component") if isinstance(body.get("component"), str) else None
    try:
        keyid = trusted.verify(body)
        command = command_from_body(body)
    except (SignatureError, CommandError) as exc:
        return Refused("rejected", str(exc), cid, component)
    return _rules(command, keyid, device=device, now=now,
                  last=executed.get(command.component),
                  running=running.get(command.component))


def _rules(command: Command, keyid: str, *, device: str, now: float, last: Executed | None,
           running: str | None) -> Verdict:
    def refuse(cause: str, reason: RefusalReason = "rejected") -> Refused:
        return Refused(reason, cause, command.correlation_id, command.component)

    if command.device != device:
        return refuse(f"command is for device {command.device!r}, not this one")
    if command.release is None:
        return refuse("command carries no release")
    if command.action != "cancel" and last is not None and command.release == last.release:
        if command.correlation_id == last.correlation_id:
            return Repeated(command)  # a re-publish, a QoS 1 redelivery, a retained copy
        return refuse(f"release {command.release} was already used by another attempt")
    if command.expires_at is None:
        return refuse("command carries no expires_at")
    expires = parse_time(command.expires_at)
    if expires is None:
        return refuse(f"expires_at {command.expires_at!r} is not an RFC 3339 time")
    if now >= expires.timestamp():
        return refuse(f"command expired at {command.expires_at}")
    if last is not None and command.release < last.release:
        return refuse(f"replayed command: release {command.release} is not above "
                      f"{last.release}, the newest this device executed")
    if command.action == "cancel":
        return Accepted(command, keyid)  # of the attempt `release` names, or a newer one
    if (command.action == "update" and running is not None and not command.downgrade
            and is_lower(command.version, running)):
        return refuse(f"update to {command.version} is lower than the running {running} "
                      "and not marked downgrade", "downgrade")
    return Accepted(command, keyid)
