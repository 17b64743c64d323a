"""Counting a Rollout's generation where nobody else does: +1 whenever its spec changes.

Kubernetes bumps `metadata.generation` itself; a folder, a git repository or the API
do not, so fleetwave counts: a name first seen is generation 1, an unchanged spec
keeps its number, a changed spec (another `spec_hash`) gets the next one. Sources and
the engine both count with `count_generation`; the planner only makes sure a
persisted rollout state never sees its generation go backwards.
"""

from __future__ import annotations

Seen = tuple[int, str]
"""(generation, spec_hash) last counted for a name."""


def count_generation(seen: Seen | None, spec_hash: str) -> int:
    """The generation of a spec with `spec_hash`, given what was counted before.

    >>> [count_generation(seen, "a") for seen in (None, (3, "a"), (3, "b"))]
    [1, 3, 4]
    """
    if seen is None:
        return 1
    return seen[0] if seen[1] == spec_hash else seen[0] + 1
