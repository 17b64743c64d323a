"""What a device publishes (DESIGN.md section 2), built in one place for every device.

The simulator and the reference agent both build their `status`, `state` and `online`
payloads here, so the device side of the protocol has one spelling; the controller's
parser (`fleetwave.protocol.parsing`) is the other half. Pure: the caller passes the time
and publishes the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fleetwave.protocol.admission import Refused
from fleetwave.protocol.messages import StatusType


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def status_body(type_: StatusType | str, correlation_id: str | None, timestamp_ms: int,
                **fields: Any) -> dict[str, Any]:
    """A status message; `correlation_id` None for devices of the older protocol."""
    body: dict[str, Any] = {"type": str(type_), "timestamp": timestamp_ms}
    body.update({k: v for k, v in fields.items() if v is not None})
    if correlation_id:
        body["correlation_id"] = correlation_id
    return body


def refusal_body(refused: Refused, timestamp_ms: int) -> dict[str, Any]:
    """How a device reports a command it refused: `update_failed` with the reason and cause."""
    return status_body(StatusType.FAILED, refused.correlation_id, timestamp_ms,
                       reason=refused.reason, error=refused.cause)


def state_body(device: str, versions: Mapping[str, str], timestamp_ms: int, *,
               labels: Mapping[str, str] | None = None, deployment_type: str | None = None,
               ip: str | None = None, containers: Sequence[Mapping[str, Any]] = (),
               **extra: Any) -> dict[str, Any]:
    """The retained reported state."""
    body: dict[str, Any] = {"uuid": device, "versions": dict(versions),
                            "labels": dict(labels or {}), "timestamp": timestamp_ms}
    if deployment_type is not None:
        body["deployment_type"] = deployment_type
    if ip is not None:
        body["ip"] = ip
    body["containers"] = [dict(c) for c in containers]
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def online_body(online: bool, timestamp_ms: int | None = None) -> dict[str, Any]:
    """The retained liveness flag; the last will carries `online_body(False)`."""
    body: dict[str, Any] = {"online": online}
    if timestamp_ms is not None:
        body["timestamp"] = timestamp_ms
    return body
