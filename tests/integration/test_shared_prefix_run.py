"""Shared prefixes end to end on the simulator with its prefix cache on: the report's
prefix-cache hit rate (from the server's own counters, through Prometheus) is the share of
prompt tokens the prefixes make once each was seen, and the cache takes their prefill off TTFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmbench_k8s.analysis.prometheus import HIT_RATE_SERIES
from fmbench_k8s.simulator.profiles import profile_for
from tests.integration.localrun import benchmark, run_benchmark

pytestmark = pytest.mark.integration
PREFIX, QUESTION = 1024, 64  # 64 blocks of 16, then a question of its own


def test_the_hit_rate_and_the_ttft_show_the_prefix_cache(tmp_path: Path) -> None:
    doc = benchmark(
        "prefix",
        [{"name": "cached", "instanceType": "g6e.2xlarge", "engine": "simulator",
          "args": ["--prefix-cache-blocks", "4096"]},
         {"name": "uncached", "instanceType": "g6e.2xlarge", "engine": "simulator"}],
        {"requestsPerMinute": 600, "promptTokens": {"mean": QUESTION}, "outputTokens": {"mean": 8},
         "sharedPrefix": {"prefixes": 4, "tokens": PREFIX}},
        {"latency": {"metric": "ttft", "percentile": 90, "maxSeconds": 2}},
        {"mode": "fixed", "concurrency": {"levels": [4]}, "warmup": "1s", "stageDuration": "5s", "drain": "3s",
         "minRequestsPerStage": 35, "workers": 2},
    )  # fmt: skip
    _, run = run_benchmark(doc, tmp_path)
    report = json.loads((run / "report.json").read_text())
    assert report["serverMetrics"]["collected"], report["serverMetrics"]
    served = {s["variant"]: s for s in report["serverMetrics"]["stages"]}
    # every prefix was seen in the warm-up and the first requests: in the window each prompt finds
    # its 1,024-token prefix cached and not its question
    rate = served["cached"]["metrics"]["prefixCacheHitRate"]
    assert rate["value"] == pytest.approx(PREFIX / (PREFIX + QUESTION), abs=0.01)
    assert rate["series"] in HIT_RATE_SERIES
    assert served["uncached"]["metrics"].get("prefixCacheHitRate") is None
    # the profile's prefill per token, times the prefix: what the cache saves of each TTFT
    saved = PREFIX * profile_for("g6e.2xlarge").prefill_s_per_token
    ttft = {v["name"]: v["stages"][0]["ttft"]["p50"] for v in report["variants"]}
    assert ttft["uncached"] - ttft["cached"] == pytest.approx(saved, rel=0.25), (ttft, saved)
