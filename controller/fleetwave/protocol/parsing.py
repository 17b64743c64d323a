"""Bytes from the wire to message values, or a reason to drop them.

Every device message passes through `parse_message`, on the ingest hot path (tens of
thousands a second), so validation is written by hand with `isinstance` checks rather than a
JSON Schema validator per message. It never raises: whatever a device sends becomes either a
message about *that* device (the topic names it, and a uuid in the payload must agree) or a
`Dropped` with one of `fleetwave.metrics.DROP_REASONS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from fleetwave.protocol.messages import (
    Command,
    Container,
    DeviceMessage,
    Online,
    ReportedState,
    Status,
    StatusType,
)
from fleetwave.protocol.topics import TopicKind, Topics

DEFAULT_MAX_BYTES: Final = 16384
"""16 KiB: a generous reported state (dozens of containers and labels) stays far below it."""

MAX_STRING: Final = 1024
"""Longest string field kept from a device; longer ones fail the schema (log-safe bound)."""

DropReason = Literal["too_large", "invalid_json", "invalid_schema", "uuid_mismatch",
                     "unknown_topic"]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message fleetwave refused, and why (`reason` is a metric label value)."""

    reason: DropReason
    device: str | None
    detail: str


class CommandError(ValueError):
    """A command payload a device cannot act on (devices ignore it and log why)."""


class _Invalid(Exception):
    """Internal: schema violation with a human detail; never leaves this module."""


_STATUS_TYPES: Final[dict[str, StatusType]] = {t.value: t for t in StatusType}


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not str or len(value) > MAX_STRING:
        raise _Invalid(f"{key} must be a string of at most {MAX_STRING} characters")
    return value


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float and abs(value) < 2**63:  # False for NaN and inf
        return int(value)
    raise _Invalid(f"{key} must be a number")


def _check_uuid(body: Mapping[str, Any], device: str) -> Dropped | None:
    claimed = body.get("uuid")
    if claimed is None or claimed == device:
        return None
    return Dropped("uuid_mismatch", device, f"payload uuid {str(claimed)[:64]!r} on its topic")


def _status(body: Mapping[str, Any], device: str, received_at: float) -> Status:
    type_ = _STATUS_TYPES.get(body.get("type"))  # type: ignore[arg-type]
    if type_ is None:
        raise _Invalid("type must be one of " + ", ".join(_STATUS_TYPES))
    correlation_id = _opt_str(body, "correlation_id") or None
    percent = _opt_int(body, "percent")
    if percent is not None and not 0 <= percent <= 100:
        raise _Invalid("percent must be between 0 and 100")
    return Status(
        device=device,
        type=type_,
        correlation_id=correlation_id,
        received_at=received_at,
        timestamp=_opt_int(body, "timestamp"),
        version=_opt_str(body, "version"),
        current_version=_opt_str(body, "current_version"),
        target_version=_opt_str(body, "target_version"),
        deployment_type=_opt_str(body, "deployment_type"),
        percent=percent,
        reason=_opt_str(body, "reason"),
        error=_opt_str(body, "error"),
        exit_code=_opt_int(body, "exit_code"),
        boot_id=_opt_str(body, "boot_id"),
    )


def _str_map(body: Mapping[str, Any], key: str, required: bool) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        if required:
            raise _Invalid(f"{key} is required")
        return {}
    if type(value) is not dict:
        raise _Invalid(f"{key} must be an object of strings")
    for k, v in value.items():
        if type(v) is not str or len(v) > MAX_STRING or len(k) > MAX_STRING:
            raise _Invalid(f"{key}.{k[:64]} must be a string")
    return value


def _containers(body: Mapping[str, Any]) -> tuple[Container, ...]:
    value = body.get("containers")
    if value is None:
        return ()
    if type(value) is not list:
        raise _Invalid("containers must be a list")
    out: list[Container] = []
    for item in value:
        if type(item) is not dict:
            raise _Invalid("containers[] must be objects")
        name = _opt_str(item, "name")
        if not name:
            raise _Invalid("containers[].name is required")
        running = item.get("running")
        if running is None:
            status = _opt_str(item, "status") or _opt_str(item, "state")
            running = status is None or status == "running"
        elif type(running) is not bool:
            raise _Invalid("containers[].running must be a boolean")
        out.append(Container(name=name, image=_opt_str(item, "image"), running=running))
    return tuple(out)


def _state(body: Mapping[str, Any], device: str, received_at: float) -> ReportedState:
    return ReportedState(
        device=device,
        versions=_str_map(body, "versions", required=True),
        received_at=received_at,
        labels=_str_map(body, "labels", required=False),
        deployment_type=_opt_str(body, "deployment_type"),
        ip=_opt_str(body, "ip"),
        name=_opt_str(body, "name"),
        containers=_containers(body),
        timestamp=_opt_int(body, "timestamp"),
        boot_id=_opt_str(body, "boot_id"),
    )


def _online(body: Any, device: str, received_at: float) -> Online:
    if type(body) is bool:  # a bare `true` / `false`, as some agents send
        return Online(device=device, online=body, received_at=received_at)
    if type(body) is not dict:
        raise _Invalid("online must be an object")
    flag = body.get("online")
    if type(flag) is not bool:
        raise _Invalid("online must be a boolean")
    return Online(device=device, online=flag, received_at=received_at,
                  timestamp=_opt_int(body, "timestamp"))


def parse_message(topic: str, payload: bytes, received_at: float, topics: Topics,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> DeviceMessage | Dropped:
    """One inbound message -> a `DeviceMessage` or a `Dropped`; never raises."""
    try:
        return _parse(topic, payload, received_at, topics, max_bytes)
    except Exception as exc:  # defence in depth: the ingest path must survive anything
        return Dropped("invalid_schema", None, f"unexpected {type(exc).__name__}")


def _parse(topic: str, payload: bytes, received_at: float, topics: Topics,
           max_bytes: int) -> DeviceMessage | Dropped:
    parsed = topics.parse(topic)
    if parsed is None or parsed[0] is TopicKind.UPDATE:
        return Dropped("unknown_topic", None, f"topic {topic[:200]!r}")
    kind, device = parsed
    size = len(payload)
    if size > max_bytes:
        return Dropped("too_large", device, f"{size} bytes (limit {max_bytes})")
    if size == 0:
        return Dropped("invalid_json", device, "empty payload (retained message cleared)")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Dropped("invalid_json", device, f"{kind.value} payload is not JSON")
    try:
        if kind is TopicKind.ONLINE:
            if type(body) is dict and (mismatch := _check_uuid(body, device)) is not None:
                return mismatch
            return _online(body, device, received_at)
        if type(body) is not dict:
            return Dropped("invalid_schema", device, f"{kind.value} must be a JSON object")
        mismatch = _check_uuid(body, device)
        if mismatch is not None:
            return mismatch
        if kind is TopicKind.STATUS:
            return _status(body, device, received_at)
        return _state(body, device, received_at)
    except _Invalid as exc:
        return Dropped("invalid_schema", device, f"{kind.value}: {exc}")


_ACTIONS: Final = ("update", "cancel", "rollback")


def parse_command(payload: bytes) -> Command:
    """A command as a device reads it; raises `CommandError` on anything else."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise CommandError("command is not JSON") from exc
    if type(body) is not dict:
        raise CommandError("command must be a JSON object")
    return command_from_body(body)


def command_from_body(body: Mapping[str, Any]) -> Command:
    """The fields of a command object (already JSON-decoded); raises `CommandError`."""
    action = body.get("action")
    if action not in _ACTIONS:
        raise CommandError(f"action must be one of {', '.join(_ACTIONS)}")
    try:
        version = _opt_str(body, "version") or ""
        correlation_id = _opt_str(body, "correlation_id") or ""
        component = _opt_str(body, "component") or "agent"
        scheduled_time = _opt_str(body, "scheduled_time")
        timestamp = _opt_int(body, "timestamp") or 0
        device = _opt_str(body, "device")
        expires_at = _opt_str(body, "expires_at")
        release = body.get("release")
        if release is not None and (type(release) is not int or release < 0):
            raise _Invalid("release must be a non-negative integer")
        artifact = body.get("artifact")
        url = sha = digest = None
        if artifact is not None:
            if type(artifact) is not dict:
                raise _Invalid("artifact must be an object")
            url = _opt_str(artifact, "url")
            sha = _opt_str(artifact, "sha256")
            digest = _opt_str(artifact, "digest")
    except _Invalid as exc:
        raise CommandError(str(exc)) from exc
    force = body.get("force", False)
    downgrade = body.get("downgrade", False)
    confirm = body.get("confirm_after_restart", False)
    if type(force) is not bool or type(downgrade) is not bool or type(confirm) is not bool:
        raise CommandError("force, downgrade and confirm_after_restart must be booleans")
    if action != "cancel" and not version:
        raise CommandError(f"{action} needs a version")
    return Command(action=action, component=component, version=version,
                   correlation_id=correlation_id, timestamp=timestamp,
                   scheduled_time=scheduled_time, force=force, artifact_url=url,
                   artifact_sha256=sha, artifact_digest=digest, device=device,
                   release=release, expires_at=expires_at, downgrade=downgrade,
                   confirm_after_restart=confirm)
