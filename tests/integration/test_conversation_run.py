"""Multi-turn conversations end to end on the simulator: every turn reaches the server with the
conversation so far (the server's own prompt-token count says so, turn by turn), conversations go
on across stages and workers, and the simulator's prefix cache finds each history it has seen."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.localrun import benchmark, run_benchmark

pytestmark = pytest.mark.integration
# Longer conversations than a stage holds: every stage ends mid-conversation
QUESTION, ANSWER, TURNS = 32, 8, 50


def test_each_turn_carries_its_history_to_the_server(tmp_path: Path) -> None:
    doc = benchmark(
        "chat",
        [{"name": "g6e-sim", "instanceType": "g6e.2xlarge", "engine": "simulator",
          "args": ["--prefix-cache-blocks", "4096"]}],
        {"requestsPerMinute": 600, "promptTokens": {"mean": QUESTION}, "outputTokens": {"mean": ANSWER},
         "conversation": {"turns": TURNS}},
        {"latency": {"metric": "ttft", "percentile": 90, "maxSeconds": 2}},
        {"mode": "sweep", "concurrency": {"levels": [2, 4]}, "warmup": "500ms", "stageDuration": "3s", "drain": "3s",
         "minRequestsPerStage": 35, "workers": 2},
    )  # fmt: skip
    _, run = run_benchmark(doc, tmp_path)
    records = pq.read_table(run / "records").to_pandas()
    ok = records[records["outcome"] == "ok"]
    assert set(ok["turn"]) >= {1, 2, 3}
    # the simulator counts the words of every message: turn k carries k questions and k-1 answers
    for turn, prompts in ok.groupby("turn")["prompt_tokens"]:
        assert set(prompts) == {turn * QUESTION + (turn - 1) * ANSWER}, (turn, sorted(set(prompts)))
    # conversations outlive stages: at one user per worker in the first stage and two in the
    # second, each worker's second stage continues its conversation and starts one new one
    for worker, mine in ok.sort_values("t_sent").groupby("worker"):
        last = int(mine[mine["stage"] == 0]["turn"].iloc[-1])
        assert last < TURNS
        opening = sorted(int(t) for t in mine[mine["stage"] == 1]["turn"].iloc[:2])
        assert opening == [1, last + 1], (worker, last, opening)
    # later turns repeat what the server saw before: its prefix cache finds it
    report = json.loads((run / "report.json").read_text())
    rates = [s["metrics"]["prefixCacheHitRate"]["value"] for s in report["serverMetrics"]["stages"]]
    assert all(r > 0.3 for r in rates), rates
