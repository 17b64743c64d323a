"""Random status traffic against a real database: the store's invariants always hold.

Hypothesis drives creations, batches of statuses (duplicated, reordered, with
unknown, missing or another device's correlation ids) and controller decisions,
and after every step checks that no record moved backwards, that the database
holds at most one open update per device and component, that a batch from one
device changed no other device's records, and that the store agrees with the
pure state machine applied in order.
"""

from __future__ import annotations

import asyncio
import dataclasses

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fleetwave.protocol.messages import Status, StatusType
from fleetwave.store import Store, open_store
from fleetwave.store.codec import record_from_row
from fleetwave.store.schema import OPEN_STATES_SQL, metadata, updates
from fleetwave.updates.model import (
    RANK,
    Decision,
    DecisionKind,
    UpdateRecord,
    UpdateState,
    next_release,
)
from fleetwave.updates.transitions import apply_decision, apply_status, pick_legacy_record

DEVICES = ["dev-a", "dev-b", "dev-c"]
COMPONENTS = ["agent", "nodered"]

status_specs = st.lists(
    st.tuples(
        st.sampled_from(list(StatusType)),
        st.one_of(st.integers(0, 30), st.just("unknown"), st.none()),  # record index / kind
        st.integers(-10, 110),
        st.sampled_from(["1.0.6", "2.0", None]),
    ),
    min_size=1, max_size=8)


class StoreMachine(RuleBasedStateMachine):
    """One instance per example; the store and event loop are shared by the test."""

    runner: asyncio.Runner
    store: Store

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, UpdateRecord] = {}
        self.order: list[str] = []
        self.sent: list[Status] = []
        self.clock = 1000.0
        self.previous: dict[str, UpdateRecord] = {}

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.runner.run(coro)

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    @initialize()
    def wipe(self) -> None:
        async def wipe() -> None:
            async with self.store.engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    await conn.execute(table.delete())

        self.run(wipe())

    # -- rules ----------------------------------------------------------------------------

    @rule(device=st.sampled_from(DEVICES), component=st.sampled_from(COMPONENTS),
          version=st.sampled_from(["1.0.6", "2.0"]),
          clock_step=st.sampled_from([0.0, 0.0, -500.0, -0.0004]))
    def create(self, device: str, component: str, version: str, clock_step: float) -> None:
        """`clock_step`: a clock stepped back (NTP, another replica) or the same millisecond."""
        n = len(self.order)
        at = self.tick() + clock_step
        record = UpdateRecord(id=f"u{n}", device=device, rollout="r1", component=component,
                              to_version=version, state=UpdateState.PENDING, attempt=1,
                              correlation_id=f"c{n}", created_at=at, updated_at=at,
                              release=next_release(at))
        expected = not any(r.is_open and r.device == device and r.component == component
                           for r in self.model.values())
        highest = max((r.release for r in self.model.values()
                       if (r.device, r.component) == (device, component)), default=None)
        record = dataclasses.replace(record, release=next_release(at, highest))
        created = self.run(self.store.updates.create([record]))
        assert created == ([record] if expected else [])
        self.order.append(record.id)
        if expected:
            self.model[record.id] = record
        else:
            self.order.pop()

    def _statuses(self, device: str | None, specs: list[tuple]) -> list[Status]:  # type: ignore[type-arg]
        out = []
        for i, (type_, which, percent, version) in enumerate(specs):
            sender = device or DEVICES[i % len(DEVICES)]
            if which is None:
                correlation = None
            elif which == "unknown":
                correlation = "c-unknown"
            else:
                correlation = f"c{which % len(self.order)}" if self.order else "c-unknown"
            out.append(Status(device=sender, type=type_, correlation_id=correlation,
                              received_at=self.tick(), percent=percent, target_version=version,
                              error="e"))
        return out

    def _send(self, batch: list[Status]) -> None:
        before = dict(self.model)
        outcomes = self.run(self.store.updates.apply_statuses(batch))
        assert [o.status for o in outcomes] == batch
        for outcome in outcomes:
            expected = self._model_apply(outcome.status)
            assert outcome.after == expected, outcome
        self.sent.extend(batch)
        senders = {s.device for s in batch}
        stored = self._stored()
        for record_id, record in before.items():
            if record.device not in senders:
                assert stored[record_id] == record, "a batch touched another device's record"

    def _model_apply(self, status: Status) -> UpdateRecord | None:
        by_corr = {r.correlation_id: r for r in self.model.values()}
        if status.correlation_id is not None:
            record = by_corr.get(status.correlation_id)
        else:
            candidates = [r for r in self.model.values() if r.device == status.device]
            record = pick_legacy_record(status, candidates).record
        if record is None or record.device != status.device:
            return None
        try:
            after = apply_status(record, status).record
        except Exception:
            return None
        if after is not None:
            self.model[after.id] = after
        return after

    @rule(device=st.sampled_from(DEVICES), specs=status_specs)
    def statuses_from_one_device(self, device: str, specs: list[tuple]) -> None:  # type: ignore[type-arg]
        self._send(self._statuses(device, specs))

    @rule(specs=status_specs)
    def statuses_from_many_devices(self, specs: list[tuple]) -> None:  # type: ignore[type-arg]
        self._send(self._statuses(None, specs))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay_old_statuses_shuffled(self, data: st.DataObject) -> None:
        picked = data.draw(st.lists(st.sampled_from(self.sent), min_size=1, max_size=6))
        shuffled = data.draw(st.permutations(picked))
        # Redelivered by the broker: same content, received again now.
        self._send([dataclasses.replace(s, received_at=self.tick()) for s in shuffled])

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), kind=st.sampled_from(list(DecisionKind)))
    def decide(self, data: st.DataObject, kind: DecisionKind) -> None:
        record_id = data.draw(st.sampled_from(sorted(self.model)))
        decision = Decision(kind, at=self.tick())
        changed = self.run(self.store.updates.apply_decisions([(record_id, decision)]))
        expected = apply_decision(self.model[record_id], decision).record
        assert changed == ([] if expected is None else [expected])
        if expected is not None:
            self.model[record_id] = expected

    # -- invariants -----------------------------------------------------------------------

    def _stored(self) -> dict[str, UpdateRecord]:
        async def load() -> dict[str, UpdateRecord]:
            async with self.store.engine.connect() as conn:
                rows = await conn.execute(sa.select(updates))
                return {r.id: record_from_row(r._mapping) for r in rows}

        return self.run(load())  # type: ignore[no-any-return]

    @invariant()
    def releases_strictly_increase_per_device_and_component(self) -> None:
        last: dict[tuple[str, str], int] = {}
        for record_id in self.order:
            record = self.model[record_id]
            key = (record.device, record.component)
            assert record.release > last.get(key, 0), (record_id, record.release, last)
            last[key] = record.release

    @invariant()
    def store_matches_model_and_never_moves_backwards(self) -> None:
        stored = self._stored()
        assert stored == self.model
        for record_id, record in stored.items():
            held = self.previous.get(record_id)
            if held is not None:
                assert RANK[record.state] >= RANK[held.state], (held.state, record.state)
                if held.is_terminal and record.state != held.state:
                    assert record.state == UpdateState.ROLLED_BACK
                if held.progress is not None and record.state == UpdateState.IN_PROGRESS:
                    assert (record.progress or 0) >= held.progress
        self.previous = stored

    @invariant()
    def database_holds_one_open_update_per_device_and_component(self) -> None:
        async def duplicates() -> list[tuple[str, str]]:
            async with self.store.engine.connect() as conn:
                rows = await conn.execute(sa.text(
                    f"SELECT device, component FROM updates WHERE {OPEN_STATES_SQL} "
                    "GROUP BY device, component HAVING COUNT(*) > 1"))
                return [tuple(r) for r in rows]  # type: ignore[misc]

        assert self.run(duplicates()) == []


def test_random_status_traffic_keeps_the_store_consistent(store_url: str) -> None:
    runner = asyncio.Runner()
    store = open_store(store_url)
    try:
        runner.run(store.migrate())
        machine = type("BoundStoreMachine", (StoreMachine,), {"runner": runner,
                                                               "store": store})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=30 if store.backend == "sqlite" else 20, stateful_step_count=20,
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        runner.run(store.close())
        runner.close()
