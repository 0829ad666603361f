from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmbench_k8s.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), ("1h30m", 5400), ("1.5s", 1.5), ("1m30s", 90)],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "30 s", "-5s", "5d", "s", "1h-30m", "1.s"])
def test_invalid_durations_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="use a number with a unit ms, s, m or h"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_round_trips_to_the_millisecond(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)
