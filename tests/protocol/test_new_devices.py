"""The new-device token bucket: known devices always pass, new ones at the set rate."""

from __future__ import annotations

import doctest

from fleetwave.protocol import new_devices
from fleetwave.protocol.messages import Online, ReportedState, Status, StatusType
from fleetwave.protocol.new_devices import NewDeviceGate


def state(uuid: str) -> ReportedState:
    return ReportedState(device=uuid, versions={"agent": "1"}, received_at=0.0)


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(new_devices).failed == 0


def test_a_burst_beyond_ten_minutes_worth_is_refused_and_known_devices_pass() -> None:
    gate = NewDeviceGate(per_minute=100)
    known = {"old-1", "old-2"}
    batch = [state(f"new-{i}") for i in range(1_500)] + [state("old-1"), state("old-2")]
    kept = gate.admit(batch, known.__contains__, 0.0)
    assert [m.device for m in kept if m.device.startswith("old")] == ["old-1", "old-2"]
    assert len(kept) == 1_000 + 2 and gate.refused == 500


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    gate = NewDeviceGate(per_minute=60, burst_minutes=1)
    known: set[str] = set()
    assert len(gate.admit([state(f"a{i}") for i in range(60)], known.__contains__, 0.0)) == 60
    assert gate.admit([state("late")], known.__contains__, 0.5) == []
    assert len(gate.admit([state(f"b{i}") for i in range(10)], known.__contains__, 10.5)) == 10
    # An hour idle refills to the burst, not to an hour's worth.
    assert len(gate.admit([state(f"c{i}") for i in range(100)], known.__contains__,
                          3600.0)) == 60
    # A clock that steps back adds nothing.
    assert gate.admit([state("d")], known.__contains__, 100.0) == []


def test_one_token_per_device_and_statuses_untouched() -> None:
    gate = NewDeviceGate(per_minute=1, burst_minutes=1)
    batch = [state("n"), Online(device="n", online=True, received_at=0.0),
             Status(device="x", type=StatusType.PROGRESS, correlation_id="c", received_at=0.0),
             state("m")]
    kept = gate.admit(batch, set().__contains__, 0.0)
    assert [(type(m).__name__, m.device) for m in kept] == [
        ("ReportedState", "n"), ("Online", "n"), ("Status", "x")]
    assert gate.refused == 1
