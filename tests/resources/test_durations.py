"""Durations as users write them: parsing, formatting, and their round trip."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwave.resources.durations import (
    PATTERN,
    DurationError,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(("text", "value"), [
    pytest.param("30s", timedelta(seconds=30), id="seconds"),
    pytest.param("10m", timedelta(minutes=10), id="minutes"),
    pytest.param("4h", timedelta(hours=4), id="hours"),
    pytest.param("1h30m", timedelta(minutes=90), id="compound"),
    pytest.param("500ms", timedelta(milliseconds=500), id="milliseconds"),
    pytest.param("1.5h", timedelta(minutes=90), id="fraction"),
    pytest.param("0s", timedelta(0), id="zero"),
])
def test_parse(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["-15m", "15", "m", "1d", "1 h", "", "1h-30m", "PT1H"])
def test_rejects_what_the_crd_pattern_rejects(text: str) -> None:
    assert not re.match(PATTERN, text)
    with pytest.raises(DurationError, match="like 30s, 10m, 4h or 1h30m"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips_to_the_millisecond(ms: int) -> None:
    value = timedelta(milliseconds=ms)
    text = format_duration(value)
    assert re.match(PATTERN, text)
    assert parse_duration(text) == value


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h"])),
                min_size=1, max_size=4))
def test_any_pattern_string_parses_and_formats_back_to_the_same_value(
        parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value
    assert format_duration(parse_duration(format_duration(value))) == format_duration(value)
