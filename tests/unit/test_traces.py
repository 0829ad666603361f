"""Trace replay (contract/traces.py, load.arrival: trace): the two formats, the time scaling to a
stage's rate, the loop, each arrival's lengths, and the workers' split of the arrivals."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from fmbench_k8s.api.spec import BenchmarkSpec, Trace
from fmbench_k8s.contract.traces import TraceError, hourly_profile, parse_trace
from fmbench_k8s.loadgen.datasets import DatasetError
from fmbench_k8s.loadgen.prompts import PromptSource, load_corpus
from fmbench_k8s.loadgen.schedule import worker_offsets
from fmbench_k8s.simulator.tokenizer import count_tokens
from tests.corpus import REPO

AZURE = b"""TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:47.1805900,396,109
2023-11-16 18:15:49.1805900,879,31
"""
MOONCAKE = b"""{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]}
{"timestamp": 500, "input_length": 6472, "output_length": 26, "hash_ids": [46]}

{"timestamp": 2500, "input_length": 8, "output_length": 1, "hash_ids": []}
"""


def test_both_formats_give_offsets_and_lengths() -> None:
    azure = parse_trace(AZURE, Trace(uri="a.csv", format="azure"))
    assert azure.offsets == pytest.approx((0.0, 0.5, 2.5)) and azure.prompt_tokens == (374, 396, 879)
    assert azure.output_tokens == (44, 109, 31)
    moon = parse_trace(MOONCAKE, Trace(uri="m.jsonl", format="mooncake"))
    assert (
        moon.offsets == (0.0, 0.5, 2.5) and moon.prompt_tokens == (6955, 6472, 8) and moon.output_tokens == (52, 26, 1)
    )
    # the loop keeps the mean gap: 3 requests over 2.5 s plus one mean gap (1.25 s)
    assert moon.period_s == pytest.approx(3.75) and moon.rate == pytest.approx(0.8)


def test_a_replay_is_time_scaled_to_the_stage_rate_and_loops() -> None:
    replay = parse_trace(MOONCAKE, Trace(uri="m.jsonl", format="mooncake"))
    at_8 = list(itertools.islice(replay.offsets_at(8.0), 7))  # 10× the trace's own 0.8/s
    assert at_8 == pytest.approx([0.0, 0.05, 0.25, 0.375, 0.425, 0.625, 0.75])
    assert replay.lengths(4) == (6472, 26) and replay.lengths(2) == (8, 1)
    # over many loops the offered rate is the stage's
    n = 3000
    assert n / next(itertools.islice(replay.offsets_at(8.0), n, None)) == pytest.approx(8.0, rel=1e-9)
    with pytest.raises(ValueError, match="rate must be > 0"):
        next(replay.offsets_at(0))


def test_workers_split_the_replay_and_each_arrival_gets_its_rows_lengths() -> None:
    replay = parse_trace(AZURE, Trace(uri="a.csv", format="azure"))
    split = [list(itertools.islice(worker_offsets("trace", 2.0, "s", k, 2, replay=replay), 3)) for k in (0, 1)]
    assert sorted(i for part in split for i, _ in part) == list(range(6))
    merged = dict(i_t for part in split for i_t in part)
    assert [merged[i] for i in range(6)] == list(itertools.islice(replay.offsets_at(2.0), 6))


def _spec(uri: str, fmt: str) -> BenchmarkSpec:
    return BenchmarkSpec.model_validate({
        "variants": [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"}],
        "workload": {"requestsPerMinute": 60, "promptTokens": {"mean": 500}, "outputTokens": {"mean": 40},
                     "trace": {"uri": uri, "format": fmt}},
        "slo": {"latency": {"maxSeconds": 2}},
        "load": {"mode": "fixed", "arrival": "trace", "rate": {"levels": [4]}},
    })  # fmt: skip


def test_the_shipped_samples_replay_with_synthetic_prompts_of_each_rows_length() -> None:
    for name, fmt in (("azure-sample.csv", "azure"), ("mooncake-sample.jsonl", "mooncake")):
        spec = _spec(str(REPO / "examples" / "traces" / name), fmt)
        corpus = load_corpus(spec.workload)
        assert corpus is not None and corpus.replay is not None and len(corpus.replay.offsets) == 300
        source = PromptSource(spec.workload, "0:0", corpus)
        for arrival in (0, 1, 299, 300, 517):
            prompt = source.next(arrival)
            n, out = corpus.replay.lengths(arrival)
            assert count_tokens(prompt.text) == prompt.prompt_tokens == n and prompt.max_tokens == out


def test_bad_traces_and_specs_are_refused_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n2023-11-16 18:15:47,-3,1\n")
    with pytest.raises(DatasetError, match="azure trace line 3: ContextTokens -3 is not a positive number of tokens"):
        load_corpus(_spec(str(bad), "azure").workload)
    with pytest.raises(TraceError, match="columns ContextTokens, GeneratedTokens, TIMESTAMP expected"):
        parse_trace(b"time,in,out\n1,2,3\n", Trace(uri="x", format="azure"))
    with pytest.raises(TraceError, match="mooncake trace line 1: timestamp '5' is not milliseconds"):
        parse_trace(b'{"timestamp": "5", "input_length": 1, "output_length": 1}\n', Trace(uri="x", format="mooncake"))
    with pytest.raises(TraceError, match="every request arrives at the same time"):
        parse_trace(MOONCAKE.replace(b"2500", b"0").replace(b"500", b"0"), Trace(uri="x", format="mooncake"))
    with pytest.raises(DatasetError, match="cannot read trace"):
        load_corpus(_spec(str(tmp_path / "missing.csv"), "azure").workload)
    doc = _spec("t.csv", "azure").model_dump(by_alias=True, exclude_none=True)
    doc["load"]["arrival"] = "poisson"
    with pytest.raises(ValueError, match=r"load\.arrival: trace replays workload\.trace; give both, or neither"):
        BenchmarkSpec.model_validate(doc)


def _hourly_mooncake(hours: int, per_min: Callable[[int], float]) -> bytes:
    """A Mooncake trace whose hour h (from its time zero) has per_min(h % 24) evenly spaced requests/min."""
    lines, t = [], 0.0
    for h in range(hours):
        gap = 60.0 / per_min(h % 24)
        t = max(t, h * 3600.0)
        while t < (h + 1) * 3600.0:
            lines.append(f'{{"timestamp": {t * 1000:.0f}, "input_length": 10, "output_length": 5}}')
            t += gap
    return "\n".join(lines).encode()


def test_a_trace_of_a_day_or_more_gives_each_hours_mean_rate() -> None:
    two_days = parse_trace(_hourly_mooncake(48, lambda h: h + 1), Trace(uri="m.jsonl", format="mooncake"))
    assert hourly_profile(two_days) == pytest.approx([h + 1 for h in range(24)], rel=0.01)
    # Azure timestamps are placed in the UTC day: a day from 18:00 has hour 18 first
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    start = datetime(2024, 5, 10, 18, tzinfo=UTC)
    for i in range(24 * 60):  # one request a minute, and a second one in hour 18
        stamp = start + timedelta(minutes=i)
        rows += [f"{stamp:%Y-%m-%d %H:%M:%S}.0000000,100,10"] * (2 if stamp.hour == 18 else 1)
    profile = hourly_profile(parse_trace("\n".join(rows).encode(), Trace(uri="a.csv", format="azure")))
    assert profile[18] == pytest.approx(2.0, rel=0.02) and profile[:18] == pytest.approx([1.0] * 18, rel=0.02)


def test_a_trace_shorter_than_a_day_is_refused_naming_the_hours_it_lacks() -> None:
    half = parse_trace(_hourly_mooncake(12, lambda h: 2), Trace(uri="m.jsonl", format="mooncake"))
    with pytest.raises(TraceError, match=r"spans 12 h and leaves hour\(s\) 12, 13, .*, 23 of the day"):
        hourly_profile(half)


def test_day_profile_prints_the_spec_lines_that_price_that_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmbench_k8s.api.spec import Day
    from fmbench_k8s.cli import main

    trace = tmp_path / "day.jsonl"
    trace.write_bytes(_hourly_mooncake(24, lambda h: 10 if 9 <= h < 17 else 1))
    assert main(["day-profile", str(trace), "--format", "mooncake"]) == 0
    out = capsys.readouterr().out
    day = Day.model_validate(yaml.safe_load(out)["day"])
    # (the last hour's edge: its span ends one mean gap after its last request)
    assert day.hourly_requests_per_minute == pytest.approx([10 if 9 <= h < 17 else 1 for h in range(24)], rel=0.02)
    assert "peak 10 at hour 9" in out
    (tmp_path / "short.jsonl").write_bytes(MOONCAKE)
    assert main(["day-profile", str(tmp_path / "short.jsonl"), "--format", "mooncake"]) == 1
    assert "a day's profile needs a trace of at least a day" in capsys.readouterr().err
