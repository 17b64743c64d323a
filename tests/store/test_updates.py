"""Update records: idempotent creation, batched statuses and decisions, and the queries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fleetwave.protocol.messages import StatusType as T
from fleetwave.store import Store
from fleetwave.store.schema import updates
from fleetwave.updates.model import Decision, DecisionKind, Health, Reason, UpdateState
from tests.store.records import status, update

S = UpdateState


async def test_create_skips_existing_ids_and_second_open_updates(store: Store) -> None:
    first = update("u1")
    assert await store.updates.create([first]) == [first]
    # Same id again (a restarted controller), a second open update for the same device and
    # component, a duplicate within the batch, and one that is fine.
    other_component = update("u3", component="nodered")
    created = await store.updates.create([first, update("u2"), other_component,
                                          other_component])
    assert created == [other_component]
    assert {r.id for r in await store.updates.open()} == {"u1", "u3"}


async def test_a_finished_update_makes_room_for_a_retry(store: Store) -> None:
    await store.updates.create([update("u1")])
    await store.updates.apply_statuses([status(T.FAILED, "corr-u1")])
    retry = update("u2", attempt=2, created_at=300.0)
    assert await store.updates.create([retry]) == [retry]


async def test_statuses_walk_a_record_to_success(store: Store) -> None:
    await store.updates.create([update("u1")])
    outcomes = await store.updates.apply_statuses([
        status(T.COMMAND_RECEIVED, "corr-u1", at=201.0),
        status(T.STARTED, "corr-u1", at=202.0, current_version="1.0.5"),
        status(T.PROGRESS, "corr-u1", at=203.0, percent=40),
        status(T.PROGRESS, "corr-u1", at=204.0, percent=20),
        status(T.SUCCEEDED, "corr-u1", at=205.0, version="1.0.6"),
        status(T.STARTED, "corr-u1", at=206.0),
    ])
    assert [o.ignored for o in outcomes] == [None, None, None, "stale_progress", None,
                                             "terminal"]
    assert outcomes[0].before is not None and outcomes[0].before.state == S.PENDING
    assert [o.after.state if o.after else None for o in outcomes] == [
        S.ACKNOWLEDGED, S.IN_PROGRESS, S.IN_PROGRESS, None, S.SUCCEEDED, None]
    stored = await store.updates.get("u1")
    assert stored is not None
    assert stored == outcomes[4].after
    assert (stored.acknowledged_at, stored.started_at, stored.completed_at, stored.progress) == (
        201.0, 202.0, 205.0, 100)


async def test_unknown_correlation_ids_and_other_devices_touch_nothing(store: Store) -> None:
    await store.updates.create([update("u1", device="dev-a"), update("u2", device="dev-b")])
    outcomes = await store.updates.apply_statuses([
        status(T.SUCCEEDED, "corr-nope", device="dev-a"),
        status(T.FAILED, "corr-u2", device="dev-a"),  # dev-a quoting dev-b's update
        status(T.STARTED, None, device="dev-c"),  # legacy device without an update
    ])
    assert [o.ignored for o in outcomes] == ["unknown_update", "wrong_device", "no_open_update"]
    assert all(o.before is None and o.after is None for o in outcomes)
    assert {r.id: r.state for r in await store.updates.open()} == {"u1": S.PENDING,
                                                                  "u2": S.PENDING}


async def test_legacy_statuses_attach_to_the_one_open_update(store: Store) -> None:
    await store.updates.create([update("u0", state=S.SUCCEEDED, created_at=10.0),
                                update("u1", created_at=50.0)])
    outcomes = await store.updates.apply_statuses([status(T.STARTED, None), status(T.FAILED, None,
                                                                           error="disk full"),
                                           status(T.ROLLBACK_SUCCEEDED, None, at=300.0)])
    assert [(o.after.id, o.after.state) if o.after else o.ignored for o in outcomes] == [
        ("u1", S.IN_PROGRESS), ("u1", S.FAILED), ("u1", S.ROLLED_BACK)]
    old = await store.updates.get("u0")
    assert old is not None and old.state == S.SUCCEEDED


async def test_a_bad_status_never_loses_the_rest_of_its_batch(store: Store) -> None:
    await store.updates.create([update("u1"), update("u2", device="dev-b")])
    outcomes = await store.updates.apply_statuses([
        status(T.PROGRESS, "corr-u1", percent="many"),  # type: ignore[arg-type]
        status(T.FAILED, "corr-u1", error="boom\x00" + "x" * 10_000, exit_code=2**70),
        status(T.SUCCEEDED, "corr-u2", device="dev-b"),
    ])
    assert outcomes[0].ignored == "invalid_status"
    failed = await store.updates.get("u1")
    succeeded = await store.updates.get("u2")
    assert failed is not None and succeeded is not None
    assert failed.state == S.FAILED and succeeded.state == S.SUCCEEDED
    # Device-supplied text is made storable on both backends: no NUL, bounded length.
    assert failed.error is not None and "\x00" not in failed.error
    assert len(failed.error) == 4000 and failed.exit_code is None


async def test_decisions_go_through_the_state_machine(store: Store) -> None:
    await store.updates.create([update("u1"), update("u2", device="dev-b"),
                                update("u3", device="dev-c")])
    await store.updates.apply_statuses([status(T.SUCCEEDED, "corr-u3", device="dev-c")])
    changed = await store.updates.apply_decisions([
        ("u1", Decision(DecisionKind.SENT, at=150.0)),
        ("u1", Decision(DecisionKind.TIMEOUT, at=700.0, reason=Reason.UNREACHABLE)),
        ("u2", Decision(DecisionKind.HEALTHY, at=700.0)),  # refused: not succeeded
        ("u3", Decision(DecisionKind.HEALTHY, at=700.0)),
        ("missing", Decision(DecisionKind.CANCEL, at=700.0)),
    ])
    by_id = {r.id: r for r in changed}
    assert set(by_id) == {"u1", "u3"}
    assert (by_id["u1"].state, by_id["u1"].reason, by_id["u1"].sent_at) == (
        S.TIMEOUT, Reason.UNREACHABLE, 150.0)
    assert by_id["u3"].health == Health.HEALTHY
    assert await store.updates.get("u1") == by_id["u1"]
    assert await store.updates.apply_decisions([]) == []


async def test_history_is_newest_first_and_limited(store: Store) -> None:
    for attempt in range(1, 5):
        record = update(f"u{attempt}", attempt=attempt, created_at=100.0 * attempt)
        await store.updates.create([record])
        await store.updates.apply_statuses([status(T.FAILED, f"corr-u{attempt}")])
    await store.updates.create([update("other", device="dev-b", created_at=900.0)])
    history = await store.updates.of_device("dev-a", limit=3)
    assert [r.id for r in history] == ["u4", "u3", "u2"]
    assert [r.id for r in await store.updates.of_rollout("r1")] == ["u1", "u2", "u3", "u4",
                                                                 "other"]


async def test_stale_and_open_updates(store: Store) -> None:
    await store.updates.create([
        update("old", device="a", created_at=0.0),
        update("old-started", device="b", created_at=0.0, state=S.IN_PROGRESS),
        update("young", device="c", created_at=1700.0),
        update("done", device="d", created_at=0.0, state=S.SUCCEEDED),
        update("elsewhere", device="e", created_at=0.0, rollout="r2"),
    ])
    stale = await store.updates.stale(older_than_seconds=1800, now=2000.0)
    assert [r.id for r in stale] == ["elsewhere", "old", "old-started"]
    pending = await store.updates.stale(1800, 2000.0, states=[S.PENDING])
    assert [r.id for r in pending] == ["elsewhere", "old"]
    assert {r.id for r in await store.updates.open("r1")} == {"old", "old-started", "young"}


async def test_rollout_counts_use_each_devices_latest_attempt(store: Store) -> None:
    await store.updates.create([
        update("a1", device="a", state=S.FAILED, created_at=1.0),
        update("a2", device="a", attempt=2, created_at=2.0, state=S.SUCCEEDED),
        update("b1", device="b", state=S.IN_PROGRESS),
        update("c1", device="c", state=S.TIMEOUT),
        update("x1", device="x", rollout="r2", state=S.FAILED),
    ])
    counts = await store.updates.rollout_counts("r1")
    assert counts == {"pending": 0, "acknowledged": 0, "scheduled": 0, "in_progress": 1,
                      "awaiting_restart": 0, "succeeded": 1, "failed": 0, "timeout": 1,
                      "cancelled": 0, "rolled_back": 0}
    assert sum((await store.updates.rollout_counts("none")).values()) == 0


async def test_update_stats_per_rollout_and_version(store: Store) -> None:
    records = [update(f"s{i}", device=f"d{i}", state=S.SUCCEEDED, started_at=100.0,
                      completed_at=100.0 + 10 * (i + 1)) for i in range(10)]
    records += [update("f1", device="f1", state=S.FAILED),
                update("t1", device="t1", state=S.TIMEOUT),
                update("c1", device="c1", state=S.CANCELLED),
                update("o1", device="o1"),
                update("n1", device="n1", to_version="2.0", state=S.SUCCEEDED,
                       completed_at=160.0),  # no start: counted from creation (100)
                update("rb", device="rb", action="rollback", state=S.FAILED)]
    await store.updates.create(records)
    stats = await store.updates.stats("r1")
    assert [(s.version, s.total) for s in stats] == [("1.0.6", 14), ("2.0", 1)]
    main = stats[0]
    assert (main.succeeded, main.failed, main.timeout, main.cancelled, main.open) == (
        10, 1, 1, 1, 1)
    assert main.success_rate == pytest.approx(10 / 12)
    assert main.duration_p50 == pytest.approx(55.0)
    assert main.duration_p95 == pytest.approx(95.5)
    assert main.duration_mean == pytest.approx(55.0)
    assert stats[1].duration_mean == pytest.approx(60.0)
    assert await store.updates.stats("none") == []
    assert len(await store.updates.stats()) == 2


async def test_one_batch_of_many_statuses_is_one_transaction(store: Store) -> None:
    records = [update(f"u{i:04}", device=f"dev-{i:04}") for i in range(1200)]
    await store.updates.create(records)
    outcomes = await store.updates.apply_statuses(
        [status(T.SUCCEEDED, r.correlation_id, device=r.device) for r in records])
    assert all(o.after is not None for o in outcomes)
    async with store.engine.connect() as conn:
        done = (await conn.execute(sa.select(sa.func.count()).select_from(updates)
                                   .where(updates.c.state == "succeeded"))).scalar()
    assert done == 1200
