"""Who keeps a Rollout name that several definitions claim: one rule for every home.

Operators, the API and the store refer to a rollout by name, so two definitions can
never run under one name. The rule: the definition already running keeps the name
and every other claimant is refused with a problem saying where the keeper is; when
none of the claimants was running, none runs (fleetwave does not guess which file
was meant) until one is renamed or removed. A folder or git source applies it across
its files, the operator across watched namespaces.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def name_keeper(claimants: Sequence[K], incumbent: K | None) -> K | None:
    """The claimant that keeps the name, or None when it must stay unused.

    >>> name_keeper(["a.yaml"], None), name_keeper(["a.yaml", "b.yaml"], "b.yaml")
    ('a.yaml', 'b.yaml')
    >>> name_keeper(["a.yaml", "b.yaml"], None) is None
    True
    """
    if len(claimants) == 1:
        return claimants[0]
    return incumbent if incumbent is not None and incumbent in claimants else None
