"""The loop plumbing shared by the reconciler, the dashboard and the operator's status writer."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from structlog.testing import capture_logs

from fleetwave.background import Background, wake_or_stop

log = structlog.get_logger("tests.background")


async def test_a_failing_task_is_logged_by_name_and_the_others_run_on() -> None:
    background = Background(log, "test.background_failed")
    done = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def works() -> None:
        done.set()

    with capture_logs() as logs:
        failing = background.run(fails(), "the failing one")
        working = background.run(works(), "the working one")
        assert len(background) == 2
        await asyncio.gather(failing, working)  # neither raises
    assert done.is_set()
    assert [(e["event"], e["what"], e["log_level"]) for e in logs] == [
        ("test.background_failed", "the failing one", "error")]
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert len(background) == 0, "a finished task stays referenced"


async def test_background_tasks_are_held_until_they_end() -> None:
    background = Background(log, "test.background_failed")
    release = asyncio.Event()
    task = background.run(release.wait(), "waiting")
    await asyncio.sleep(0.01)
    assert len(background) == 1 and not task.done()
    release.set()
    await task
    await asyncio.sleep(0)
    assert len(background) == 0


async def sleep_time(wake: asyncio.Event, stop: asyncio.Event, longest: float | None,
                     set_after: asyncio.Event | None = None) -> tuple[bool, float]:
    """What `wake_or_stop` returned and how long it slept; `set_after` is set 0.05 s in."""
    if set_after is not None:
        asyncio.get_running_loop().call_later(0.05, set_after.set)
    began = time.monotonic()
    woken = await wake_or_stop(wake, stop, longest)
    return woken, time.monotonic() - began


def no_other_task_left() -> bool:
    return all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())


async def test_the_sleep_ends_on_a_wake_up_a_stop_or_its_longest() -> None:
    wake, stop = asyncio.Event(), asyncio.Event()
    woken, slept = await sleep_time(wake, stop, 5.0, set_after=wake)
    assert woken and 0.04 <= slept < 1.0
    wake.clear()
    woken, slept = await sleep_time(wake, stop, None, set_after=stop)
    assert woken and 0.04 <= slept < 1.0
    stop.clear()
    woken, slept = await sleep_time(wake, stop, 0.2)
    assert not woken and 0.2 <= slept < 1.0
    assert no_other_task_left()


async def test_a_wake_up_before_the_sleep_is_not_lost() -> None:
    wake, stop = asyncio.Event(), asyncio.Event()
    wake.set()  # came in while the pass ran
    woken, slept = await sleep_time(wake, stop, 5.0)
    assert woken and slept < 0.5


async def test_a_cancelled_sleep_leaves_no_waiter_behind() -> None:
    sleeper = asyncio.create_task(wake_or_stop(asyncio.Event(), asyncio.Event(), None))
    await asyncio.sleep(0.01)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert no_other_task_left()
