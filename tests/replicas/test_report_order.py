"""Across replicas, receive times do not order a device's reports: the device's own clock
does (store and memory share `rows.report_is_newer`), and a report published before a
success but received after it keeps its earlier time (`fleet.reported_at`)."""

from __future__ import annotations

from fleetwave.protocol.messages import ReportedState
from fleetwave.runtime.fleet import FleetState


def test_a_report_published_before_a_success_reads_as_older_than_it() -> None:
    """A report received late (a reconnect's backlog, another replica took the success
    status) keeps the device's own, earlier time, so the planner waits for the new state
    instead of calling it a version mismatch."""
    fleet = FleetState()
    fleet.merge_device_message(ReportedState("d", {"agent": "1.0"}, 100.0, timestamp=90_000))
    late = ReportedState("d", {"agent": "1.0"}, 200.0, timestamp=150_000)
    assert fleet.merge_device_message(late)
    assert fleet.devices["d"].state_received_at == 150.0
    ahead = ReportedState("d", {"agent": "2.0"}, 210.0, timestamp=900_000)  # clock ahead
    assert fleet.merge_device_message(ahead)
    assert fleet.devices["d"].state_received_at == 210.0
    stale = ReportedState("d", {"agent": "1.0"}, 300.0, timestamp=160_000)  # backlog
    assert not fleet.merge_device_message(stale)
    assert fleet.devices["d"].versions == {"agent": "2.0"}
