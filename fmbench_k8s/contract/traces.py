"""Request traces to replay (``load.arrival: trace``): each request's arrival time and its prompt
and output lengths, from the Azure LLM inference trace CSV or Mooncake's JSONL.

A stage replays the trace from its start, time-scaled so that its mean rate is the stage's target
rate, and loops it when the stage outlasts it (docs/workloads.md). Arrival k of the stage gets row
k's lengths (modulo the trace's length), so every worker and every run sends the same requests.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from fmbench_k8s.api.spec import Trace


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the row and what is wrong."""


@dataclass(frozen=True)
class Replay:
    """A parsed trace: arrival offsets (seconds from its first request, ascending) and lengths."""

    offsets: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    start: float = 0.0  # the first arrival: Unix time (Azure), seconds from the trace's zero (Mooncake)

    @property
    def period_s(self) -> float:
        """The loop's length: the span from the first to the last arrival plus one mean gap, so a
        looped replay keeps the trace's mean rate."""
        n = len(self.offsets)
        return self.offsets[-1] * n / (n - 1)

    @property
    def rate(self) -> float:
        """The trace's own mean rate, requests/s."""
        return len(self.offsets) / self.period_s

    def offsets_at(self, rate: float) -> Iterator[float]:
        """Endless arrival offsets of a replay whose mean rate is ``rate`` requests/s."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        scale = self.rate / rate
        period = self.period_s * scale
        return (loop * period + t * scale for loop in itertools.count() for t in self.offsets)

    def lengths(self, arrival: int) -> tuple[int, int]:
        """(prompt tokens, output tokens) of the stage's arrival number ``arrival``."""
        i = arrival % len(self.offsets)
        return self.prompt_tokens[i], self.output_tokens[i]


def parse_trace(data: bytes, trace: Trace) -> Replay:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise TraceError(f"trace {trace.uri}: not UTF-8 text") from None
    rows = _azure(text) if trace.format == "azure" else _mooncake(text)
    if len(rows) < 2:
        raise TraceError(f"trace {trace.uri}: {len(rows)} request(s); a replay needs at least 2")
    rows.sort(key=lambda r: r[0])
    start = rows[0][0]
    if rows[-1][0] <= start:
        raise TraceError(f"trace {trace.uri}: every request arrives at the same time; a rate needs a time span")
    return Replay(
        offsets=tuple(t - start for t, _, _ in rows),
        prompt_tokens=tuple(p for _, p, _ in rows),
        output_tokens=tuple(o for _, _, o in rows),
        start=start,
    )


HOUR_S = 3600.0


def hourly_profile(replay: Replay, min_cover_s: float = HOUR_S / 2) -> list[float]:
    """The trace's mean requests/min in each hour of the day (analysis.day.hourlyRequestsPerMinute):
    arrivals in hour k of any day, over the time the trace spans within hour k (to its last
    arrival plus one mean gap, so an edge hour is not over-counted). Hour 0 is 00:00 UTC
    for Azure's timestamps and the trace's time zero for Mooncake's offsets. Every hour must be
    covered for at least ``min_cover_s``, or the day would be made up."""
    times = [replay.start + t for t in replay.offsets]
    first = times[0]
    last = first + replay.period_s  # the span plus one mean gap, as a replay's loop
    counts, cover = [0] * 24, [0.0] * 24
    for t in times:
        counts[int(t // HOUR_S) % 24] += 1
    hour = math.floor(first / HOUR_S)
    while hour * HOUR_S < last:
        lo, hi = max(first, hour * HOUR_S), min(last, (hour + 1) * HOUR_S)
        cover[hour % 24] += max(0.0, hi - lo)
        hour += 1
    missing = [k for k in range(24) if cover[k] < min_cover_s]
    if missing:
        span = (last - first) / HOUR_S
        raise TraceError(
            f"the trace spans {span:.3g} h and leaves hour(s) {', '.join(map(str, missing))} of the day (UTC) "
            f"with less than {min_cover_s / 60:g} min of traffic; a day's profile needs a trace of at least a day"
        )
    return [counts[k] / (cover[k] / 60) for k in range(24)]


def _tokens(value: object, where: str, field: str) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise TraceError(f"{where}: {field} {value!r} is not a whole number of tokens") from None
    if n < 1:
        raise TraceError(f"{where}: {field} {n} is not a positive number of tokens")
    return n


def _azure(text: str) -> list[tuple[float, int, int]]:
    """TIMESTAMP (e.g. 2023-11-16 18:15:46.6805900), ContextTokens, GeneratedTokens."""
    reader = csv.DictReader(io.StringIO(text))
    wanted = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    if not wanted <= set(reader.fieldnames or ()):
        raise TraceError(f"azure trace: columns {', '.join(sorted(wanted))} expected, got {reader.fieldnames}")
    rows = []
    for n, row in enumerate(reader, 2):
        where = f"azure trace line {n}"
        stamp = row["TIMESTAMP"].strip()
        whole, _, fraction = stamp.partition(".")
        try:  # the trace writes 7 fractional digits; datetime reads up to 6
            t = datetime.fromisoformat(whole).timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
        except ValueError:
            raise TraceError(f"{where}: TIMESTAMP {stamp!r} is not a date and time") from None
        rows.append((t, _tokens(row["ContextTokens"], where, "ContextTokens"),
                     _tokens(row["GeneratedTokens"], where, "GeneratedTokens")))  # fmt: skip
    return rows


def _mooncake(text: str) -> list[tuple[float, int, int]]:
    """One object per line: timestamp (ms), input_length, output_length."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"mooncake trace line {n}"
        try:
            obj = json.loads(line)
        except ValueError:
            raise TraceError(f"{where}: not JSON") from None
        if not isinstance(obj, dict) or not {"timestamp", "input_length", "output_length"} <= obj.keys():
            raise TraceError(f"{where}: expected an object with timestamp, input_length and output_length")
        stamp = obj["timestamp"]
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp < 0:
            raise TraceError(f"{where}: timestamp {stamp!r} is not milliseconds")
        rows.append((stamp / 1000, _tokens(obj["input_length"], where, "input_length"),
                     _tokens(obj["output_length"], where, "output_length")))  # fmt: skip
    return rows
