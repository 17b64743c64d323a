"""The classification table: every kind of device lands in its Outcome, and the table holds.

Stage 1 of a pass decides one `Outcome` per targeted device; `EFFECTS` says what each
outcome adds to the rollout. These tests pin both, row by row, through `walk` (which
takes short paths for the common outcomes) and `classify` (the full rules), and check
with hypothesis that the short paths never disagree with the full rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.classify import EFFECTS, Decisions, Outcome, classify, walk
from fleetwave.planner.context import PassContext, record_ids
from fleetwave.planner.model import COUNT_KEYS, DeviceView, HashCache, RolloutState
from fleetwave.planner.tally import Tally
from fleetwave.updates.model import Health, Reason, UpdateRecord, UpdateState
from tests.planner.fleet import T0, device, make_rollout

ROLLOUT = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 10})
"""ackTimeout 10m, updateTimeout 15m, stableFor 5m, retries 1, retryBackoff 1m,
offlineAfterUpdate 10m, rollbackFailedDevices (tests/planner/fleet.py)."""

S = UpdateState


def rec(state: UpdateState = S.PENDING, attempt: int = 1, **kw: Any) -> UpdateRecord:
    rid, cid = record_ids(ROLLOUT.name, 1, "d1", attempt)
    base = UpdateRecord(id=rid, device="d1", rollout=ROLLOUT.name, component="agent",
                        to_version="1.0.6", state=state, attempt=attempt, correlation_id=cid,
                        created_at=T0, updated_at=T0, from_version="1.0.5", sent_at=T0)
    return dataclasses.replace(base, **kw)


def context(after: float, **state: Any) -> PassContext:
    s = dataclasses.replace(RolloutState.initial(ROLLOUT, T0), **state)
    return PassContext.build(ROLLOUT, s, T0 + after, None)


def outcome_of(ctx: PassContext, dev: DeviceView,
               records: list[UpdateRecord]) -> tuple[Outcome, int]:
    """(outcome, attempt to send or 0) of one device, through the pass's own walk."""
    hashes = HashCache().wave_hashes(ctx.name, [dev])
    seen = walk(ctx, [dev], hashes, {dev.uuid: records} if records else {}, {})
    [outcome] = [o for o in Outcome if seen.outcomes[o]]
    attempts = [a for _, _, a in seen.candidates_up_to(2**64)]
    return outcome, attempts[0] if attempts else 0


FAILED_TWICE = [rec(S.FAILED, completed_at=T0, started_at=T0),
                rec(S.FAILED, attempt=2, created_at=T0 + 60, completed_at=T0 + 70,
                    started_at=T0 + 60)]

TABLE = [
    # records, device (version, online, ...), seconds after T0, state changes, expected
    ([], dict(), 0, {}, (Outcome.NEEDS_UPDATE, 1)),
    ([], dict(version="1.0.6"), 0, {}, (Outcome.UP_TO_DATE, 0)),
    ([rec()], dict(), 60, {}, (Outcome.PENDING, 0)),
    ([rec(S.ACKNOWLEDGED, acknowledged_at=T0)], dict(), 60, {}, (Outcome.ACKNOWLEDGED, 0)),
    ([rec(S.SCHEDULED, scheduled_at=T0)], dict(), 60, {}, (Outcome.SCHEDULED, 0)),
    ([rec(S.IN_PROGRESS, started_at=T0)], dict(), 60, {}, (Outcome.IN_PROGRESS, 0)),
    ([rec()], dict(), 601, {}, (Outcome.TIMED_OUT, 0)),
    ([rec()], dict(online=False), 601, {}, (Outcome.UNREACHABLE, 0)),
    ([rec(to_version="1.0.4")], dict(), 10, {}, (Outcome.SUPERSEDED, 0)),
    ([rec()], dict(), 10, dict(rolled_back="user"), (Outcome.CANCELLED_FOR_ROLLBACK, 0)),
    ([rec(S.SUCCEEDED, completed_at=T0)], dict(version="1.0.6"), 299, {},
     (Outcome.AWAITING_HEALTH, 0)),
    ([rec(S.SUCCEEDED, completed_at=T0)], dict(version="1.0.6"), 300, {}, (Outcome.HEALTHY, 0)),
    ([rec(S.SUCCEEDED, completed_at=T0, health=Health.HEALTHY)], dict(version="1.0.6"), 900,
     {}, (Outcome.HEALTHY, 0)),
    ([rec(S.SUCCEEDED, completed_at=T0, health=Health.HEALTHY)], dict(version="1.0.7"), 900,
     {}, (Outcome.DRIFTED, 2)),
    ([rec(S.SUCCEEDED, completed_at=T0)], dict(version="1.0.5"), 300, {}, (Outcome.UNHEALTHY, 0)),
    ([rec(S.SUCCEEDED, completed_at=T0, health=Health.UNHEALTHY)], dict(version="1.0.6"),
     900, {}, (Outcome.UNHEALTHY, 0)),
    ([rec(S.TIMEOUT, reason=Reason.UNREACHABLE)], dict(), 900, {}, (Outcome.UNREACHABLE, 2)),
    ([rec(S.TIMEOUT, reason=Reason.UNREACHABLE)], dict(online=False), 900, {},
     (Outcome.UNREACHABLE, 0)),
    ([rec(S.TIMEOUT, reason=Reason.UNREACHABLE)], dict(version="1.0.6"), 900, {},
     (Outcome.UNREACHABLE_DONE, 0)),
    ([rec(S.TIMEOUT, reason=Reason.ACK_TIMEOUT)], dict(), 900, {}, (Outcome.TIMED_OUT, 2)),
    ([rec(S.FAILED, completed_at=T0)], dict(), 30, {}, (Outcome.FAILED, 0)),
    ([rec(S.FAILED, completed_at=T0)], dict(), 60, {}, (Outcome.FAILED, 2)),
    (FAILED_TWICE, dict(), 4000, {}, (Outcome.PARKED, 0)),
    (FAILED_TWICE, dict(), 4000, dict(released={"d1": T0 + 30}), (Outcome.FAILED, 3)),
    ([rec(S.CANCELLED, reason=Reason.CANCELLED_BY_USER)], dict(), 10, {}, (Outcome.CANCELLED, 0)),
    ([rec(S.CANCELLED, reason=Reason.SUPERSEDED)], dict(), 10, {}, (Outcome.CANCELLED_RETRY, 2)),
    ([rec(S.CANCELLED, reason=Reason.SUPERSEDED)], dict(version="1.0.6"), 10, {},
     (Outcome.CANCELLED_DONE, 0)),
    ([rec(S.ROLLED_BACK, reason=Reason.UNHEALTHY)], dict(), 10, {},
     (Outcome.ROLLED_BACK_FAILURE, 0)),
    ([rec(S.ROLLED_BACK)], dict(), 10, {}, (Outcome.ROLLED_BACK, 0)),
    ([rec(S.SUCCEEDED, to_version="1.0.4", completed_at=T0, health=Health.HEALTHY)],
     dict(version="1.0.4"), 10, {}, (Outcome.NEEDS_UPDATE, 2)),
    ([rec(S.AWAITING_RESTART, started_at=T0, confirm_after_restart=True, boot_id="b1")],
     dict(version="1.0.6"), 899, {}, (Outcome.AWAITING_RESTART, 0)),
    ([rec(S.AWAITING_RESTART, started_at=T0, confirm_after_restart=True, boot_id="b1")],
     dict(version="1.0.6"), 900, {}, (Outcome.TIMED_OUT, 0)),
]


@pytest.mark.parametrize(("records", "dev", "after", "state", "expected"), TABLE,
                         ids=[f"{row[-1][0].name}-{i}" for i, row in enumerate(TABLE)])
def test_each_kind_of_device_lands_in_its_outcome(
        records: list[UpdateRecord], dev: dict[str, Any], after: float,
        state: dict[str, Any], expected: tuple[Outcome, int]) -> None:
    assert outcome_of(context(after, **state), device("d1", **dev), records) == expected


def test_the_table_reaches_every_outcome() -> None:
    assert {row[-1][0] for row in TABLE} == set(Outcome)


def test_effects_has_one_consistent_row_per_outcome() -> None:
    assert set(EFFECTS) == set(Outcome)
    for outcome, effect in EFFECTS.items():
        assert effect.count is None or effect.count in COUNT_KEYS, outcome
        assert not effect.failure or effect.terminal, f"{outcome}: a failure is terminal"
        assert not effect.in_flight or effect.holds_step, f"{outcome}: in flight holds"
        assert not (effect.done and effect.holds_step), f"{outcome}: done cannot hold"


def test_tally_sums_the_rows() -> None:
    n = [0] * len(Outcome)
    n[Outcome.IN_PROGRESS], n[Outcome.PARKED], n[Outcome.UNREACHABLE_DONE] = 2, 1, 3
    t = Tally.of(n, extra_in_flight=1, conflicted=4)
    assert (t.counts["in_progress"], t.counts["parked"], t.counts["unreachable"],
            t.counts["conflicted"]) == (2, 1, 3, 4)
    assert (t.failures, t.terminal, t.done, t.in_flight) == (1, 1, 3, 3)


RECORDS = st.builds(
    rec,
    state=st.sampled_from(list(UpdateState)),
    to_version=st.sampled_from(["1.0.6", "1.0.5"]),
    health=st.sampled_from(list(Health)),
    completed_at=st.sampled_from([None, T0]),
    reason=st.sampled_from([None, Reason.UNREACHABLE, Reason.CANCELLED_BY_USER]),
    action=st.sampled_from(["update", "update", "rollback"]),
)


@settings(max_examples=300, deadline=None)
@given(record=st.one_of(st.none(), RECORDS), version=st.sampled_from(["1.0.5", "1.0.6"]),
       online=st.sampled_from([True, False, None]), after=st.sampled_from([10, 400, 2000]),
       rolled_back=st.booleans())
def test_the_short_paths_agree_with_the_full_rules(record: UpdateRecord | None, version: str,
                                                   online: bool | None, after: float,
                                                   rolled_back: bool) -> None:
    """`walk` skips `classify` for the commonest devices; it must reach the same verdict."""
    ctx = context(after, rolled_back="user" if rolled_back else None)
    dev = device("d1", version=version, online=online)
    records = [record] if record is not None else []
    full = classify(ctx, Decisions(ctx.now), dev, records)
    assert outcome_of(ctx, dev, records) == full
