"""Work beside a long-running loop: guarded background tasks, and the loop's sleep.

The reconciler, the dashboard, the sources and the operator's status writer run loops
that start side work they must not die of, and sleep until woken, stopped or a timeout
ends. Both idioms live here, outside the runtime, so that the dashboard (which may not
import the runtime) shares them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


class Background:
    """Tasks run beside a loop; a failure is logged as `failed` and never raised.

    Holding the tasks keeps them from being garbage-collected while they run (asyncio
    keeps only weak references); each leaves the set when it ends.
    """

    def __init__(self, logger: Any, failed: str) -> None:
        self._log = logger
        self._failed = failed
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Awaitable[Any], name: str) -> asyncio.Task[None]:
        """Start `work` as a task called `name`."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                self._log.exception(self._failed, what=name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        """How many are still running."""
        return len(self._tasks)


async def wake_or_stop(wake: asyncio.Event, stop: asyncio.Event, longest: float | None) -> bool:
    """Sleep until `wake` or `stop` is set, or `longest` seconds pass (None: no limit);
    False when the time ran out.

    The caller clears `wake` before the work the sleep follows, so a wake-up that came
    during that work ends this sleep at once instead of being lost. No waiter outlives
    the call, even when the caller is cancelled."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=longest,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return bool(done)
