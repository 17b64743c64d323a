"""Which of two version strings is lower: the one ordering devices and the controller share.

A device refuses an unmarked `update` to a lower version than it runs (DESIGN.md 9.1), and
the controller marks `downgrade` where a Rollout declares a lower version; both must agree
on "lower", so both call `compare`. Semantic Versioning 2.0 precedence (an optional `v`,
missing minor/patch read as 0, pre-releases below their release, build metadata ignored);
strings that are not versions are incomparable (`None`), never guessed at.
Pure and dependency-free: the device agent imports it.
"""

from __future__ import annotations

import re
from typing import Final

_VERSION: Final = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$")

_Key = tuple[tuple[int, int, int], tuple[tuple[int, int | str], ...] | None]


def version_key(text: str) -> _Key | None:
    """A sort key with SemVer precedence, or None when `text` is not a version."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    core = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return core, None
    # Numeric identifiers sort below alphanumeric ones (SemVer 11.4.3).
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return core, parts


def compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 as `a` is below, equal to or above `b`; None when either is no version."""
    ka, kb = version_key(a), version_key(b)
    if ka is None or kb is None:
        return None
    if ka[0] != kb[0]:
        return -1 if ka[0] < kb[0] else 1
    pa, pb = ka[1], kb[1]
    if pa == pb:
        return 0
    if pa is None:  # a release outranks its pre-releases
        return 1
    if pb is None:
        return -1
    return -1 if _pre_lt(pa, pb) else 1


def _pre_lt(a: tuple[tuple[int, int | str], ...], b: tuple[tuple[int, int | str], ...]) -> bool:
    for (ka, va), (kb, vb) in zip(a, b, strict=False):
        if ka != kb:
            return ka < kb
        if va != vb:
            return va < vb  # type: ignore[operator]  # same kind: both int or both str
    return len(a) < len(b)


def is_lower(version: str, than: str) -> bool:
    """True only when both are versions and `version` has lower precedence."""
    return compare(version, than) == -1
