"""Prompt-length buckets in the analysis: each stage split by bucket, each bucket judged by the
SLO, its own highest level, and a note where the mix's answer hides a bucket that fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmbench_k8s.analysis.run import analyze_run
from fmbench_k8s.analysis.synthetic import SyntheticBucket, SyntheticVariant, synthesize, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.contract.report import parse_report
from fmbench_k8s.storage import LocalStorage

BUCKETS = [
    {"name": "short", "minTokens": 10, "maxTokens": 100, "share": 0.8},
    {"name": "long", "minTokens": 2000, "maxTokens": 3000, "share": 0.2, "outputTokens": {"mean": 32}},
]
SPEC = BenchmarkSpec.model_validate({
    "variants": [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"}],
    "workload": {"requestsPerMinute": 600, "outputTokens": {"mean": 64}, "buckets": BUCKETS},
    "slo": {"latency": {"metric": "ttft", "percentile": 75, "maxSeconds": 1.0}, "maxErrorRate": 0.02},
    "load": {"mode": "sweep", "concurrency": {"levels": [1, 4, 8, 16]}},
})  # fmt: skip
# Long prompts take 4× the TTFT: 0.8 s at level 1, 1.04 s at 4 (slowdown 0.1 per user). p75 of the
# mix lies among the short prompts (80% of the traffic), so the mix meets the SLO at every level
# while the long bucket's own p75 passes 1 s from level 4 on.
VARIANT = SyntheticVariant(
    "g5", levels=(1, 4, 8, 16), ttft_s=0.2, slowdown=0.1, output_tokens=64, requests_per_stage=2000,
    buckets=(SyntheticBucket("short", 0.8, 50), SyntheticBucket("long", 0.2, 2500, ttft_factor=4.0)),
)  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("buckets")
    table, stages = synthesize_table([VARIANT], stage_s=60, warmup_s=5, drain_s=30, seed=5)
    write_run(LocalStorage(root), table, stages)
    analyze_run(SPEC, LocalStorage(root), benchmark="buckets", run_id="r1")
    doc = json.loads((root / "report.json").read_text())
    parse_report(doc)
    return doc, root


def test_each_stage_is_split_by_bucket_with_the_records_own_numbers(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    frame, _ = synthesize([VARIANT], stage_s=60, warmup_s=5, drain_s=30, seed=5)
    (variant,) = doc["variants"]
    for stage in variant["stages"]:
        names = [b["name"] for b in stage["buckets"]]
        assert names == ["short", "long"]  # the spec's order
        assert sum(b["requests"] for b in stage["buckets"]) == stage["steady"]["requests"]
        steady = frame[(frame["stage"] == stage["stage"]) & frame["in_steady_window"]]
        for b in stage["buckets"]:
            rows = steady[steady["bucket"] == b["name"]]
            ok = rows[rows["outcome"] == "ok"]
            assert b["requests"] == len(rows) and b["ok"] == len(ok)
            # the exact linear percentile of the bucket's own ok requests (the report keeps 12 digits)
            assert b["sloPercentile"] == pytest.approx(float(np.percentile(ok["ttft_s"], 75)), rel=1e-11)
            assert b["meanPromptTokens"] == (50 if b["name"] == "short" else 2500)
        long = next(b for b in stage["buckets"] if b["name"] == "long")
        assert long["requests"] / stage["steady"]["requests"] == pytest.approx(0.2, abs=0.04)


def test_each_bucket_gets_its_own_answer_and_a_hidden_failure_is_named(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    (variant,) = doc["variants"]
    assert variant["meetsSlo"] and variant["maxConcurrencyMeetingSlo"] == 16  # the mix meets everywhere
    answers = {a["name"]: a for a in variant["buckets"]}
    assert answers["short"]["maxLevelMeetingSlo"] == 16 and answers["short"]["outcomeAtSloStage"] == "meets"
    assert answers["long"]["maxLevelMeetingSlo"] == 1 and answers["long"]["firstFailingLevel"] == 4
    assert answers["long"]["outcomeAtSloStage"] == "fails" and answers["long"]["sloPercentileAtSloStage"] > 1.0
    assert any(
        n.startswith("bucket long does not meet the SLO at level 16, where the variant is sized (fails)")
        and n.endswith("up to level 1")
        for n in variant["notes"]
    ), variant["notes"]
    # the workload as the report states it: the buckets and the mix they make
    w = doc["workload"]
    assert [b["name"] for b in w["buckets"]] == ["short", "long"]
    assert w["buckets"][1]["outputTokens"]["mean"] == 32 and w["buckets"][0]["outputTokens"]["mean"] == 64
    assert w["promptTokens"]["mean"] == pytest.approx(0.8 * 55 + 0.2 * 2500)
    assert w["outputTokens"]["mean"] == pytest.approx(0.8 * 64 + 0.2 * 32)


def test_the_report_pages_show_the_buckets(report: tuple[dict[str, Any], Path]) -> None:
    _, root = report
    html, md = (root / "report.html").read_text(), (root / "report.md").read_text()
    for page in (html, md):
        assert "By prompt-length bucket" in page and "2000–3000" in page
        assert "in 2 buckets (short, long)" in page
    assert md.count("| g5 | long |") == 1 and md.count("| g5 | 1 | 4 | long |") == 1


def test_a_run_without_buckets_has_no_bucket_fields(tmp_path: Path) -> None:
    table, stages = synthesize_table([SyntheticVariant("g5", levels=(1,))], stage_s=10, warmup_s=1, drain_s=5)
    write_run(LocalStorage(tmp_path), table, stages)
    spec = BenchmarkSpec.model_validate({**SPEC.model_dump(by_alias=True, exclude_none=True),
                                         "workload": {"requestsPerMinute": 60, "promptTokens": {"mean": 10},
                                                      "outputTokens": {"mean": 8}}})  # fmt: skip
    analyze_run(spec, LocalStorage(tmp_path), benchmark="plain", run_id="r1")
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["workload"].get("buckets") is None and doc["variants"][0].get("buckets") is None
    assert all(s.get("buckets") is None for s in doc["variants"][0]["stages"])
    assert "By prompt-length bucket" not in (tmp_path / "report.html").read_text()
