"""The reconciler's rules, fast: a real store on in-memory SQLite, the real planner, and a
fake publisher that only records commands (no broker: these tests are about the engine's
own I/O order, the wake-up and incremental planning; tests/runtime/test_run_end_to_end.py
covers the real broker). The test plays the devices by handing the engine their messages.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from fleetwave.metrics import build_metrics
from fleetwave.protocol.messages import Command, Online, ReportedState, Status, StatusType
from fleetwave.resources.model import Rollout, SourceRef, resource_from
from fleetwave.runtime.engine import Engine
from fleetwave.store import Store
from tests.gates.gate_server import GateServer, serving


class FakePublisher:
    """Records what the engine publishes, in order."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Command]] = []
        self.clears: list[str] = []

    async def publish_command(self, device: str, command: Command) -> None:
        self.commands.append((device, command))

    async def clear_command(self, device: str) -> None:
        self.clears.append(device)


def rollout(name: str = "r1", version: str = "2.0.0", steps: list[int] | None = None,
            component: str = "agent") -> Rollout:
    resource = resource_from({
        "kind": "Rollout", "metadata": {"name": name},
        "spec": {"component": component, "version": version, "selector": {},
                 "strategy": {"steps": [{"percent": p} for p in (steps or [100])],
                              "maxInFlight": 1000},
                 "health": {"ackTimeout": "60s", "updateTimeout": "60s", "stableFor": "0s"},
                 "failurePolicy": {"maxFailurePercent": 50, "minSample": 10, "retries": 0}}},
        SourceRef(kind="folder"))
    assert isinstance(resource, Rollout)
    return resource


async def started(store: Store, devices: int) -> tuple[Engine, FakePublisher]:
    publisher = FakePublisher()
    engine = Engine(store, publisher, build_metrics(), resync_interval=3600.0)
    await engine.start()
    now = time.time()
    await engine.on_device_messages(
        [ReportedState(device=f"d{i:03d}", versions={"agent": "1.0.0"}, received_at=now)
         for i in range(devices)]
        + [Online(device=f"d{i:03d}", online=True, received_at=now) for i in range(devices)])
    await engine.observed.ingest.reports.flush()
    return engine, publisher


async def answer(engine: Engine, publisher: FakePublisher, version: str = "2.0.0") -> None:
    """Every device commanded so far reports received, started and succeeded, then its
    new state."""
    now = time.time()
    msgs: list[Any] = []
    for device, command in publisher.commands:
        for kind in (StatusType.COMMAND_RECEIVED, StatusType.STARTED,
                     StatusType.SUCCEEDED):
            msgs.append(Status(device=device, type=kind, correlation_id=command.correlation_id,
                               received_at=now, version=version))
        msgs.append(ReportedState(device=device, versions={"agent": version},
                                  received_at=now + 0.001))
    await engine.on_device_messages(msgs)


async def until(check: Any) -> None:
    """Poll a condition on the event loop (the engine's loop runs meanwhile), for at most
    10 s."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition never held")


def phase(engine: Engine, name: str = "r1") -> str:
    status: dict[str, Any] = (engine.get_rollout(name) or {}).get("status", {})
    return str(status.get("phase"))


async def test_records_are_stored_before_their_commands_are_published(store: Store) -> None:
    engine, publisher = await started(store, 20)
    engine.set_source({"r1": rollout()}, {}, "rev1")
    await engine.reconcile_once()
    assert len(publisher.commands) == 20
    stored = {r.correlation_id: r for r in await store.updates.of_rollout("r1")}
    for _device, command in publisher.commands:
        record = stored[command.correlation_id]
        assert record.sent_at is not None, "sent is stored once the command went out"


async def test_a_status_during_a_pass_wakes_the_loop_at_once(store: Store) -> None:
    """The lost wake-up: the loop idled for the resync interval (an hour here) when a
    status arrived while a pass ran. Every wave must follow the last without it."""
    engine, publisher = await started(store, 40)
    engine.set_source({"r1": rollout(steps=[25, 50, 100])}, {}, "rev1")
    stop = asyncio.Event()
    loop = asyncio.create_task(engine.run(stop))
    try:
        for wave in (10, 20, 40):
            await until(lambda n=wave: len(publisher.commands) == n)  # type: ignore[misc]
            await answer(engine, publisher)
        await until(lambda: phase(engine) == "Completed")
    finally:
        stop.set()
        await loop
    assert len({d for d, _ in publisher.commands}) == 40, "each device commanded once"
    assert sorted(publisher.clears) == sorted(d for d, _ in publisher.commands)


async def test_only_changed_component_groups_are_planned_again(store: Store) -> None:
    engine, publisher = await started(store, 10)
    engine.set_source({"r1": rollout()}, {}, "rev1")
    await engine.reconcile_once()
    await answer(engine, publisher)
    await engine.reconcile_once()
    assert phase(engine) == "Completed"
    reconciler = engine.reconciler
    await reconciler.reconcile_once()  # nothing changed since: r1 is not planned
    before = dict(engine.fleet.status)
    engine.fleet.status["r1"] = {"phase": "Stale"}
    await reconciler.reconcile_once()
    assert engine.fleet.status["r1"] == {"phase": "Stale"}, "an unchanged group was replanned"
    engine.set_source({"r1": rollout(version="3.0.0")}, {}, "rev2")  # a new spec
    await reconciler.reconcile_once()
    assert engine.fleet.status["r1"] != before["r1"]
    assert phase(engine) == "Progressing"


async def test_one_transaction_per_pass_for_every_rollout(store: Store) -> None:
    engine, _ = await started(store, 30)
    engine.set_source({"a": rollout("a"), "b": rollout("b", component="nodered"),
                       "c": rollout("c", component="other")}, {}, "rev1")
    writes: list[str] = []
    original = store.write

    async def counted(work: Any) -> Any:
        writes.append(getattr(work, "__qualname__", "?"))
        return await original(work)

    store.write = counted  # type: ignore[method-assign]
    await engine.reconcile_once()
    # one for the pass (records, decisions, events, three states), one for `sent`
    assert len(writes) == 2, writes


async def test_the_merge_rule_keeps_the_newer_report_in_memory_and_store(store: Store) -> None:
    engine, _ = await started(store, 1)
    now = time.time()
    newer = ReportedState(device="d000", versions={"agent": "5.0.0"}, received_at=now + 10)
    older = ReportedState(device="d000", versions={"agent": "4.0.0"}, received_at=now + 5)
    await engine.on_device_messages([newer])
    await engine.on_device_messages([older])  # a late redelivery
    assert engine.fleet.devices["d000"].versions == {"agent": "5.0.0"}
    await engine.observed.ingest.reports.flush()
    row = await store.devices.get("d000")
    assert row is not None and row.versions == {"agent": "5.0.0"}


async def test_equal_version_maps_are_shared_between_devices(store: Store) -> None:
    engine, _ = await started(store, 50)
    versions = {id(row.versions) for row in engine.fleet.devices.values()}
    assert len(versions) == 1


async def test_a_closed_gate_is_asked_again_when_its_back_off_ends(store: Store) -> None:
    """A closed gate waited for the resync interval (an hour here), whatever its back-off
    said: nothing else wakes a rollout that waits on its gate."""
    async with serving(GateServer("s")) as gate:
        engine, publisher = await started(store, 10)
        gates = engine.reconciler.gates
        gates.first_backoff = 0.5
        spec = {**rollout().raw_spec, "strategy": {
            "steps": [{"percent": 100, "gate": {"webhook": {"url": gate.url}}}],
            "maxInFlight": 1000}}
        gated = resource_from({"kind": "Rollout", "metadata": {"name": "r1"}, "spec": spec},
                              SourceRef(kind="folder"))
        assert isinstance(gated, Rollout)
        engine.set_source({"r1": gated}, {}, "rev1")
        stop = asyncio.Event()
        loop = asyncio.create_task(engine.run(stop))
        try:
            await until(lambda: len(gate.requests) == 2)
            assert publisher.commands == []
            gate.answer = (200, {"allow": True})  # the third answer opens
            await until(lambda: len(publisher.commands) == 10)
            gaps = [b.at - a.at for a, b in itertools.pairwise(gate.requests)]
            # The back-off counts from the pass that asked, the gaps from the requests'
            # arrival: the first request (a new connection) may arrive a little later.
            assert 0.4 <= gaps[0] < 0.5 + 0.5 and 0.9 <= gaps[1] < 1.0 + 0.5, gaps
            assert len(gate.requests) == 3, "an open gate is not asked again"
        finally:
            stop.set()
            await loop


async def test_a_wave_waits_for_outbox_room_and_still_goes_out_whole(store: Store) -> None:
    """A pass queues at most the outbox's room: a 30-device wave through a room of 8 is
    planned in several passes (records created when there is room to publish them, so
    none waits in the queue long enough to time out), and every device gets its command
    once, without a resync."""
    engine, publisher = await started(store, 30)
    engine.outbox.room = 8
    engine.set_source({"r1": rollout()}, {}, "rev1")
    await engine.reconciler.reconcile_once()
    await engine.outbox.flush()
    assert len(await store.updates.of_rollout("r1")) == 8, "a pass creates only what fits"
    assert len(publisher.commands) == 8
    stop = asyncio.Event()
    loop = asyncio.create_task(engine.run(stop))
    try:
        await until(lambda: len(publisher.commands) == 30)
        assert len({c.correlation_id for _, c in publisher.commands}) == 30
        await answer(engine, publisher)
        await until(lambda: phase(engine) == "Completed")
    finally:
        stop.set()
        await loop
