"""Wave membership: a stable hash order of devices and cumulative step sizes.

Membership must survive restarts and spread across the fleet, so it comes from
blake2b(rollout name, uuid) alone - no randomness, no insertion order. A device
that appears later takes its own place in that order: if its hash sorts before
the current step's cut-off it is a member of the current step, otherwise of a
later one.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from hashlib import blake2b


def device_hash(rollout: str, uuid: str) -> int:
    """A 64-bit position of the device in the rollout's wave order.

    The rollout name is part of the key so that different rollouts pick
    different canaries (one unlucky device is not the canary of everything).

    >>> device_hash("r", "a") == device_hash("r", "a")
    True
    >>> device_hash("r", "a") != device_hash("s", "a")
    True
    """
    digest = blake2b(f"{rollout}\x00{uuid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def step_size(percent: float, targeted: int) -> int:
    """Members of a step: ceil(percent × targeted / 100), integer-exact.

    Rounding up means a 5 % canary of 10 devices is 1 device, never 0.

    >>> step_size(5, 10)
    1
    >>> step_size(25, 1000)
    250
    >>> step_size(33, 10)
    4
    >>> step_size(100, 7)
    7
    >>> step_size(0, 7)
    0
    """
    if percent >= 100:
        return targeted
    if isinstance(percent, int):
        return min(targeted, -(-percent * targeted // 100))
    return min(targeted, math.ceil(percent * targeted / 100))


def thresholds(percents: Sequence[float], hashes: Sequence[int]) -> list[int]:
    """The largest hash inside each step (-1 for an empty step), from sorted `hashes`.

    With hashes [3, 8, 20, 41] and steps 25/50/100: sizes 1, 2, 4, so thresholds
    [3, 8, 41]: a device with hash 8 is in step 1 (0-based), one with 20 in step 2.

    >>> thresholds([25, 50, 100], [3, 8, 20, 41])
    [3, 8, 41]
    """
    out = []
    n = len(hashes)
    for p in percents:
        k = step_size(p, n)
        out.append(hashes[k - 1] if k > 0 else -1)
    # Cumulative: a step never has fewer members than the one before.
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return out


def step_of(hash_value: int, limits: Sequence[int]) -> int:
    """0-based index of the first step whose threshold covers the hash.

    len(limits) means "in no step" (the last step is below 100 %).

    >>> step_of(8, [3, 8, 41]), step_of(20, [3, 8, 41]), step_of(50, [3, 8, 41])
    (1, 2, 3)
    """
    return bisect_left(limits, hash_value)
