"""A day of traffic (analysis.day; analysis/daycost.py): the report's static and autoscaled fleets
against the formulas of docs/cost-model.md, computed here by hand from the report's own capacity
and price."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fmbench_k8s.analysis.run import analyze_run
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.storage import LocalStorage

# night, morning ramp, a peak, evening: N changes hour to hour, and hour 0 follows hour 23
HOURLY = [40.0] * 6 + [300.0, 900.0, 1500.0, 1500.0] + [1200.0] * 8 + [600.0, 300.0] + [0.0, 0.0, 40.0, 40.0]


def _report(tmp_path: Path, **day: Any) -> dict[str, Any]:
    spec = BenchmarkSpec.model_validate({
        "variants": [
            {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
            {"name": "haiku", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude-3-haiku-20240307-v1:0"}},
        ],
        "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
        "slo": {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 3.0}},
        "analysis": {"day": {"hourlyRequestsPerMinute": HOURLY, **day}},
    })  # fmt: skip
    variants = [
        SyntheticVariant("g5", levels=(1, 4, 16, 64), ttft_s=0.15, itl_s=0.02, slowdown=0.05, output_tokens=64),
        SyntheticVariant("haiku", levels=(4,), ttft_s=0.4, itl_s=0.01, slowdown=0.0, output_tokens=64),
    ]
    table, stages = synthesize_table(variants, stage_s=30, warmup_s=5, drain_s=30, seed=3)
    write_run(LocalStorage(tmp_path), table, stages)
    analyze_run(spec, LocalStorage(tmp_path), benchmark="day", run_id="r1")
    return dict(json.loads((tmp_path / "report.json").read_text()))


def _tokens(v: dict[str, Any]) -> float:
    (stage,) = [s for s in v["stages"] if s["stage"] == v["sloStage"]]
    return float(stage["meanPromptTokens"] + stage["meanOutputTokens"])


def test_static_and_autoscaled_fleets_follow_the_formulas(tmp_path: Path) -> None:
    doc = _report(tmp_path, scaleUpDelay="6m", minInstances=1)
    by = {v["name"]: v for v in doc["variants"]}
    g5 = by["g5"]
    x1, price, h = g5["throughputRpmPerInstance"], g5["pricePerHour"], doc["analysis"]["headroom"]
    need = [math.ceil(r / (h * x1)) if r > 0 else 0 for r in HOURLY]
    assert len(set(need)) >= 4 and max(need) >= 2  # the day is shaped: several fleet sizes
    fleet = [max(n, 1) for n in need]
    added = sum(max(0, fleet[k] - fleet[k - 1]) for k in range(24))
    hours = sum(fleet) + added * 6 / 60
    day = g5["day"]
    requests = sum(HOURLY) * 60
    assert day["requestsPerDay"] == pytest.approx(requests)
    assert day["staticInstances"] == max(need)
    assert day["staticCostPerDay"] == pytest.approx(max(need) * 24 * price)
    assert day["autoscaledInstanceHours"] == pytest.approx(hours)
    assert day["autoscaledCostPerDay"] == pytest.approx(hours * price)
    assert day["autoscaledCostPerDay"] < day["staticCostPerDay"]
    assert day["staticCostPer1mTokens"] == pytest.approx(day["staticCostPerDay"] / (requests * _tokens(g5)) * 1e6)
    assert day["upperBound"] is g5["capacityLowerBound"]
    # a token-priced API costs its price per request whatever the fleet
    haiku = by["haiku"]["day"]
    assert haiku["staticInstances"] is None and haiku["autoscaledInstanceHours"] is None
    assert (
        haiku["staticCostPerDay"]
        == haiku["autoscaledCostPerDay"]
        == pytest.approx(by["haiku"]["costPerRequest"] * requests)
    )
    assert doc["analysis"]["day"] == {
        "hourlyRequestsPerMinute": HOURLY,
        "scaleUpDelaySeconds": 360.0,
        "minInstances": 1,
    }
    md = (tmp_path / "report.md").read_text()
    assert "## A day of traffic" in md and "a new instance paid from 6 min before its hour" in md


def test_without_a_floor_an_idle_hour_costs_nothing(tmp_path: Path) -> None:
    doc = _report(tmp_path, scaleUpDelay="0s", minInstances=0)
    g5 = next(v for v in doc["variants"] if v["name"] == "g5")
    x1, h = g5["throughputRpmPerInstance"], doc["analysis"]["headroom"]
    need = [math.ceil(r / (h * x1)) if r > 0 else 0 for r in HOURLY]
    assert 0 in need and g5["day"]["autoscaledInstanceHours"] == pytest.approx(sum(need))


def test_a_day_needs_24_hours() -> None:
    with pytest.raises(ValueError, match="24"):
        BenchmarkSpec.model_validate({
            "variants": [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"}],
            "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
            "slo": {"latency": {"maxSeconds": 3.0}},
            "analysis": {"day": {"hourlyRequestsPerMinute": [1.0] * 23}},
        })  # fmt: skip
