"""Duration strings as users write them (`30s`, `10m`, `1h30m`, `500ms`).

The grammar is the one Kubernetes CRDs conventionally accept, so a Rollout
validates the same in git and in the cluster.
"""

from __future__ import annotations

import re
from datetime import timedelta

PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_WHOLE = re.compile(PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    """A string that is not a duration; the message says what is accepted."""


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m` into a timedelta.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration("500ms")
    datetime.timedelta(microseconds=500000)
    """
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise DurationError(
            f"{text!r} is not a duration: write a number followed by a unit "
            "(ms, s, m, h), like 30s, 10m, 4h or 1h30m; negative values are not allowed"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest string `parse_duration` reads back as `value` (to the millisecond).

    >>> format_duration(timedelta(minutes=90))
    '1h30m'
    """
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds:
        out += f"{seconds}s"
    if ms:
        out += f"{ms}ms"
    return out
