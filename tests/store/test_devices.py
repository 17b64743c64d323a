"""Device reports, liveness and inventory labels: newest wins, inventory over reported."""

from __future__ import annotations

from fleetwave.protocol.messages import Container, Online, ReportedState
from fleetwave.store import Store


def report(device: str, at: float, version: str = "1.0.5", **fields: object) -> ReportedState:
    return ReportedState(device=device, versions={"agent": version}, received_at=at,
                         **fields)  # type: ignore[arg-type]


async def test_reported_state_is_stored_whole(store: Store) -> None:
    await store.devices.apply_messages([report(
        "dev-a", 10.0, labels={"device_type": "rpi4"}, deployment_type="docker",
        ip="10.0.0.7", name="kiosk-7",
        containers=(Container("nodered", "nodered/node-red:3.1", running=True),))])
    device = await store.devices.get("dev-a")
    assert device is not None
    assert (device.versions, device.reported_labels, device.deployment_type, device.ip,
            device.name) == ({"agent": "1.0.5"}, {"device_type": "rpi4"}, "docker",
                             "10.0.0.7", "kiosk-7")
    assert device.containers == (Container("nodered", "nodered/node-red:3.1", True),)
    assert (device.online, device.last_seen, device.state_received_at) == (None, 10.0, 10.0)
    assert await store.devices.get("dev-unknown") is None


async def test_an_older_report_never_overwrites_a_newer_one(store: Store) -> None:
    await store.devices.apply_messages([report("dev-a", 20.0, "1.0.6")])
    # Late redelivery in a later batch, and both orders inside one batch.
    await store.devices.apply_messages([report("dev-a", 15.0, "1.0.4")])
    await store.devices.apply_messages([report("dev-b", 30.0, "2.0"), report("dev-b", 25.0, "1.9"),
                                       report("dev-c", 25.0, "1.9"), report("dev-c", 30.0, "2.0")])
    devices = {d.uuid: d for d in await store.devices.all()}
    assert {u: d.versions["agent"] for u, d in devices.items()} == {
        "dev-a": "1.0.6", "dev-b": "2.0", "dev-c": "2.0"}
    assert devices["dev-a"].state_received_at == 20.0


async def test_online_flag_tracks_the_newest_message_and_null_means_legacy(store: Store) -> None:
    await store.devices.apply_messages([report("legacy", 5.0), report("modern", 5.0),
                                       Online("modern", True, 6.0)])
    await store.devices.apply_messages([Online("modern", False, 9.0), Online("modern", True, 7.0)])
    devices = {d.uuid: d for d in await store.devices.all()}
    assert devices["legacy"].online is None
    assert devices["modern"].online is False
    # Going offline (the broker's last will) is not a sign of life, and the superseded
    # online=true at 7.0 counts for nothing.
    assert devices["modern"].last_seen == 6.0


async def test_online_before_any_report_creates_the_device(store: Store) -> None:
    await store.devices.apply_messages([Online("dev-a", True, 3.0)])
    await store.devices.apply_messages([report("dev-a", 4.0)])
    device = await store.devices.get("dev-a")
    assert device is not None
    assert (device.online, device.versions, device.last_seen) == (True, {"agent": "1.0.5"}, 4.0)


async def test_inventory_labels_win_over_reported_and_are_replaced_whole(store: Store) -> None:
    await store.devices.apply_messages([report("dev-a", 1.0, labels={"env": "dev", "site": "x"})])
    await store.devices.set_inventory_labels({"dev-a": {"env": "production"},
                                              "dev-new": {"env": "lab"}})
    a = await store.devices.get("dev-a")
    new = await store.devices.get("dev-new")
    assert a is not None and new is not None
    assert a.labels == {"env": "production", "site": "x"}
    assert a.reported_labels == {"env": "dev", "site": "x"}
    assert (new.labels, new.state_received_at) == ({"env": "lab"}, None)

    await store.devices.set_inventory_labels({"dev-new": {"env": "lab", "row": "3"}})
    a = await store.devices.get("dev-a")
    new = await store.devices.get("dev-new")
    assert a is not None and new is not None
    assert a.labels == {"env": "dev", "site": "x"}
    assert new.labels == {"env": "lab", "row": "3"}
    # A later report keeps the inventory labels.
    await store.devices.apply_messages([report("dev-new", 2.0, labels={"env": "field"})])
    new = await store.devices.get("dev-new")
    assert new is not None and new.labels == {"env": "lab", "row": "3"}


async def test_a_large_batch_goes_in_one_call(store: Store) -> None:
    await store.devices.apply_messages([report(f"dev-{i:05}", float(i)) for i in range(3000)])
    devices = await store.devices.all()
    assert len(devices) == 3000
    assert devices[0].uuid == "dev-00000" and devices[-1].last_seen == 2999.0


async def test_a_backlog_drained_late_does_not_roll_a_device_back(store: Store) -> None:
    """Replicas stamp reports with their own receive time; a replica restarted onto its
    session's backlog receives an old report late. The device's clock orders the two."""
    current = ReportedState("dev-a", {"agent": "2.0"}, 100.0, timestamp=2_000)
    await store.devices.apply_messages([current])
    stale = ReportedState("dev-a", {"agent": "1.0"}, 500.0, timestamp=1_000)
    await store.devices.apply_messages([stale])
    row = await store.devices.get("dev-a")
    assert row is not None and row.versions == {"agent": "2.0"}
    await store.devices.apply_messages([ReportedState("dev-a", {"agent": "3.0"}, 50.0,
                                                     timestamp=3_000)])
    row = await store.devices.get("dev-a")
    assert row is not None and row.versions == {"agent": "3.0"}
