"""Trace replay (loadgen/traces.py, load.arrival: trace): the two formats, the time scaling to a
stage's rate, the loop, each arrival's lengths, and the workers' split of the arrivals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fmbench_k8s.api.spec import BenchmarkSpec, Trace
from fmbench_k8s.loadgen.datasets import DatasetError
from fmbench_k8s.loadgen.prompts import PromptSource, load_corpus
from fmbench_k8s.loadgen.schedule import worker_offsets
from fmbench_k8s.loadgen.traces import TraceError, parse_trace
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
