"""Durations as users write them in a Benchmark: ``500ms``, ``30s``, ``2m``, ``1h30m``.

Kept as strings in the API (so a spec round-trips unchanged through the API server and YAML) and
converted to seconds only where time is used.
"""

from __future__ import annotations

import re

# One or more <number><unit> groups, like Go's time.ParseDuration without negative values.
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError naming the accepted forms."""
    if not isinstance(text, str) or not re.fullmatch(PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit ms, s, m or h, e.g. 30s, 2m, 1h30m")
    return sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest string that parse_duration maps back to ``seconds`` (to the millisecond)."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"
