"""Builders for the values store tests feed in: one place for the defaults."""

from __future__ import annotations

import dataclasses

from fleetwave.protocol.messages import Status, StatusType
from fleetwave.updates.model import UpdateRecord, UpdateState, next_release


def update(id: str = "u1", device: str = "dev-a", component: str = "agent",
           rollout: str = "r1", created_at: float = 100.0, **changes: object) -> UpdateRecord:
    base = UpdateRecord(id=id, device=device, rollout=rollout, component=component,
                        to_version="1.0.6", state=UpdateState.PENDING, attempt=1,
                        correlation_id=f"corr-{id}", created_at=created_at,
                        updated_at=created_at, from_version="1.0.5",
                        release=next_release(created_at))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def status(type_: StatusType, correlation_id: str | None, device: str = "dev-a",
           at: float = 200.0, **fields: object) -> Status:
    return Status(device=device, type=type_, correlation_id=correlation_id, received_at=at,
                  **fields)  # type: ignore[arg-type]
