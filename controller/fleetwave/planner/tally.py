"""Stage 2, tally: a rollout's counts, failures and progress, summed from the outcome table.

Nothing here looks at a device: the counts follow from how many devices ended in
each `Outcome` and from that outcome's row of `EFFECTS`, so the status an operator
reads and the failure budget the planner enforces cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetwave.planner.classify import EFFECTS, Outcome
from fleetwave.planner.model import COUNT_KEYS


@dataclass(frozen=True, slots=True)
class Tally:
    counts: Mapping[str, int]
    """`status.counts`: each key of COUNT_KEYS."""
    failures: int
    terminal: int
    """Devices in the failure rate's denominator (unreachable ones are not)."""
    done: int
    in_flight: int
    """Occupied maxInFlight slots before this pass sends anything."""

    @classmethod
    def of(cls, outcomes: Sequence[int], *, extra_in_flight: int = 0, conflicted: int = 0,
           overridden: int = 0) -> Tally:
        """Sum `outcomes` (devices per Outcome value) through EFFECTS.

        >>> n = [0] * len(Outcome); n[Outcome.HEALTHY] = 3; n[Outcome.FAILED] = 1
        >>> t = Tally.of(n)
        >>> t.counts["succeeded"], t.counts["failed"], t.failures, t.terminal, t.done
        (3, 1, 1, 4, 3)
        """
        counts = dict.fromkeys(COUNT_KEYS, 0)
        failures = terminal = done = in_flight = 0
        for outcome in Outcome:
            k = outcomes[outcome]
            if not k:
                continue
            effect = EFFECTS[outcome]
            if effect.count is not None:
                counts[effect.count] += k
            failures += k * effect.failure
            terminal += k * effect.terminal
            done += k * effect.done
            in_flight += k * effect.in_flight
        counts["conflicted"] = conflicted
        counts["overridden"] = overridden
        return cls(counts, failures, terminal, done, in_flight + extra_in_flight)
