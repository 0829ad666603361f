"""The sizing solver on worked examples (docs/cost-model.md walks through the same numbers)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fmbench_k8s.analysis.metrics import StageMetrics
from fmbench_k8s.analysis.pricing import PriceResolver, VariantPrice
from fmbench_k8s.analysis.sizing import Sizer, instances_needed, recommend
from fmbench_k8s.api.spec import Pricing, Variant, Workload
from fmbench_k8s.contract.stats import QuantileCi, summarize
from fmbench_k8s.contract.verdict import Kind

WORKLOAD = Workload.model_validate(
    {"requestsPerMinute": 600, "promptTokens": {"mean": 1000}, "outputTokens": {"mean": 200}}
)


def stage(
    variant: str, target: float, rpm: float, *, slo_value: float = 1.0, verdict: Kind = "meets",
    failures: tuple[str, ...] = (), out_tokens: float = 200.0, prompt_tokens: float = 1000.0,
    client_bound: bool = False,
) -> StageMetrics:  # fmt: skip
    latency = {k: summarize(np.array([slo_value])) for k in ("ttft", "tpot", "itl", "e2e", "ntpot", "e2eFromScheduled")}
    return StageMetrics(
        variant=variant, stage=int(target), target=target, target_kind="concurrency", window_start=0.0,
        window_end=60.0, requests=int(rpm), ok=int(rpm), errors=0, incomplete=0, errors_by_reason={},
        steady_requests=int(rpm), steady_ok=int(rpm), steady_errors=0, steady_incomplete=0, error_rate=0.0,
        throughput_rpm=rpm, output_tokens_per_s=rpm / 60 * out_tokens, input_tokens_per_s=0.0,
        mean_prompt_tokens=prompt_tokens, mean_output_tokens=out_tokens, goodput_rps=rpm / 60, slo_attainment=1.0,
        latency=latency, slo_value=slo_value, slo_ci=QuantileCi(slo_value, slo_value, int(rpm), 0.95, 72),
        outcome="meets" if verdict == "meets" else "fails" if verdict in ("errors", "latency") else "inconclusive",
        verdict=verdict, meets_slo=verdict == "meets", failures=failures, client_bound=client_bound,
        client_bound_share=1.0 if client_bound else 0.0,
    )  # fmt: skip


def variant(name: str, **kw: Any) -> Variant:
    body = {"name": name, "engine": "simulator", "instanceType": "g5.2xlarge", **kw}
    return Variant.model_validate(body)


def priced(v: Variant) -> VariantPrice:
    return PriceResolver(Pricing()).variant(v)


def test_instances_needed() -> None:
    assert instances_needed(600, 0.8, 60) == 13  # 12.5 → 13
    assert instances_needed(600, 0.8, 750) == 1  # never 0
    assert instances_needed(1.1, 1.0, 0.1) == 11  # 1.1 / 0.1 = 11.000000000000002 in floating point
    with pytest.raises(ValueError, match="positive"):
        instances_needed(600, 0.8, 0)


def test_cheaper_per_hour_is_not_cheaper_per_request() -> None:
    sizer = Sizer(WORKLOAD, headroom=0.8)
    small, big = variant("small", pricePerHour=1.0), variant("big", pricePerHour=3.0)
    a = sizer.size(small, [stage("small", 1, 30), stage("small", 4, 60)], priced(small))
    b = sizer.size(big, [stage("big", 8, 300), stage("big", 32, 600)], priced(big))
    # small: N = ceil(600 / (0.8 × 60)) = 13 → $13/h;  big: N = ceil(600 / 480) = 2 → $6/h
    assert (a.max_level_meeting_slo, a.throughput_rpm_at_slo) == (4, 60)
    assert a.cost is not None and a.cost.instances == 13 and a.cost.cost_per_hour == pytest.approx(13.0)
    assert b.cost is not None and b.cost.instances == 2 and b.cost.cost_per_hour == pytest.approx(6.0)
    assert b.cost.cost_per_1k_requests == pytest.approx(6.0 / (600 * 60) * 1000)
    assert b.cost.cost_per_1m_output_tokens == pytest.approx(6.0 / (600 * 60 * 200) * 1e6)
    # the whole cost over the prompt tokens measured at c* (1000 per request)
    assert b.cost.cost_per_1m_input_tokens == pytest.approx(6.0 / (600 * 60 * 1000) * 1e6)
    best = recommend([a, b])
    assert best is not None and best.variant == "big"


def test_c_star_is_the_highest_level_meeting_the_slo() -> None:
    v = variant("v", pricePerHour=1.0)
    stages = [
        stage("v", 1, 30),
        stage("v", 8, 200, slo_value=2.5, verdict="latency", failures=("p95 e2e 2.5 s > 2 s",)),
        stage("v", 4, 120),
    ]
    s = Sizer(WORKLOAD, 0.8).size(v, stages, priced(v))
    assert (s.max_level_meeting_slo, s.throughput_rpm_at_slo, s.latency_at_slo) == (4, 120, 1.0)
    assert s.slo_stage is stages[2]


def test_no_level_meets_the_slo_says_why_at_the_lowest_level() -> None:
    v = variant("slow", pricePerHour=1.0)
    stages = [
        stage("slow", 4, 90, slo_value=4.2, verdict="latency", failures=("p95 e2e 4.2 s > 2 s",)),
        stage("slow", 1, 30, slo_value=3.1, verdict="latency", failures=("p95 e2e 3.1 s > 2 s",)),
    ]
    s = Sizer(WORKLOAD, 0.8).size(v, stages, priced(v))
    assert not s.meets_slo and s.cost is None
    assert s.reason == "p95 e2e 3.1 s > 2 s even at the lowest level 1"
    assert recommend([s]) is None


def test_levels_without_enough_samples_are_named() -> None:
    v = variant("v", pricePerHour=1.0)
    few = ("insufficient samples: p95 e2e needs ≥ 72 samples in the steady window for a 95% confidence interval, "
           "got 20",)  # fmt: skip
    stages = [
        stage("v", 1, 20, verdict="insufficient-samples", failures=few),
        stage("v", 8, 200, slo_value=2.5, verdict="latency", failures=("p95 e2e 2.5 s > 2 s", *few)),
    ]
    s = Sizer(WORKLOAD, 0.8).size(v, stages, priced(v))
    assert s.reason == (
        "p95 e2e 2.5 s > 2 s at level 8; level 1 had too few samples "
        "(need ≥ 72 per steady window; raise load.minRequestsPerStage or load.stageDuration)"
    )
    only_few = Sizer(WORKLOAD, 0.8).size(v, stages[:1], priced(v))
    assert only_few.reason is not None and only_few.reason.startswith("insufficient samples at every level: level 1")


def test_no_stages_at_all() -> None:
    v = variant("none", pricePerHour=1.0)
    s = Sizer(WORKLOAD, 0.8).size(v, [], priced(v))
    assert s.reason is not None and "no records" in s.reason


def test_headroom_scales_the_instance_count() -> None:
    v = variant("v", pricePerHour=2.0)
    stages = [stage("v", 16, 200)]
    full = Sizer(WORKLOAD, 1.0).size(v, stages, priced(v)).cost
    half = Sizer(WORKLOAD, 0.5).size(v, stages, priced(v)).cost
    assert full is not None and half is not None
    assert (full.instances, half.instances) == (3, 6)
    assert (full.cost_per_hour, half.cost_per_hour) == (6.0, 12.0)


def test_replicas_divide_the_measured_throughput() -> None:
    v = variant("v", pricePerHour=1.0, replicas=2)
    s = Sizer(WORKLOAD, 0.8).size(v, [stage("v", 16, 600)], priced(v))
    assert s.throughput_rpm_per_instance == 300
    assert s.cost is not None and s.cost.instances == 3  # ceil(600 / (0.8 × 300)) = 2.5 → 3


def test_bedrock_is_priced_per_token_from_measured_means() -> None:
    v = Variant.model_validate(
        {"name": "haiku", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude-3-haiku-20240307-v1:0"}}
    )
    s = Sizer(WORKLOAD, 0.8).size(v, [stage("haiku", 16, 700, prompt_tokens=1200, out_tokens=180)], priced(v))
    per_request = 1200 / 1000 * 0.00025 + 180 / 1000 * 0.00125  # $0.000525
    assert s.cost is not None
    assert s.cost.instances == 1
    assert s.cost.cost_per_request == pytest.approx(per_request)
    assert s.cost.cost_per_hour == pytest.approx(per_request * 600 * 60)
    assert s.cost.cost_per_1k_requests == pytest.approx(per_request * 1000)


def test_bedrock_without_measured_tokens_uses_the_workload_means() -> None:
    v = Variant.model_validate(
        {"name": "haiku", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude-3-haiku-20240307-v1:0"}}
    )
    st = stage("haiku", 1, 10, prompt_tokens=math.nan, out_tokens=math.nan)
    cost = Sizer(WORKLOAD, 0.8).size(v, [st], priced(v)).cost
    assert cost is not None and cost.cost_per_request == pytest.approx(0.00025 + 0.2 * 0.00125)


def test_tie_goes_to_fewer_instances() -> None:
    sizer = Sizer(WORKLOAD, 1.0)
    four, two = variant("a-four", pricePerHour=1.0), variant("b-two", pricePerHour=2.0)
    a = sizer.size(four, [stage("a-four", 8, 150)], priced(four))  # 4 × $1
    b = sizer.size(two, [stage("b-two", 8, 300)], priced(two))  # 2 × $2
    assert a.cost is not None and b.cost is not None and a.cost.cost_per_hour == b.cost.cost_per_hour == 4.0
    best = recommend([a, b])
    assert best is not None and best.variant == "b-two"


def test_endpoint_without_price_reports_latency_and_cost_unknown() -> None:
    v = Variant.model_validate({"name": "mine", "endpoint": {"api": "openai-chat", "url": "http://h:8000/v1"}})
    s = Sizer(WORKLOAD, 0.8).size(v, [stage("mine", 4, 100)], priced(v))
    assert s.meets_slo and s.cost is None and s.latency_at_slo == 1.0
    assert s.reason is not None and s.reason.startswith("cost unknown")
    assert not s.recommendable and recommend([s]) is None


def test_client_bound_c_star_is_noted() -> None:
    v = variant("v", pricePerHour=1.0)
    s = Sizer(WORKLOAD, 0.8).size(v, [stage("v", 4, 100, client_bound=True)], priced(v))
    assert "client-bound" in s.notes[0]


def test_fmbench_view_rows() -> None:
    sizer = Sizer(WORKLOAD, 0.8)
    good, bad = variant("good", pricePerHour=1.0), variant("bad", pricePerHour=1.0)
    sizings = [
        sizer.size(good, [stage("good", 4, 100)], priced(good)),
        sizer.size(bad, [stage("bad", 1, 10, verdict="latency", failures=("x",))], priced(bad)),
    ]
    view = sizer.view([good, bad], sizings, [1, 10, 100, 1000, 10000, 600])
    assert view["requestsPerMinute"] == [1, 10, 100, 600, 1000, 10000]
    rows: Any = view["rows"]
    assert rows[0]["instances"] == [1, 1, 2, 8, 13, 125]
    assert rows[0]["costPerHour"] == [1.0, 1.0, 2.0, 8.0, 13.0, 125.0]
    assert rows[1]["instances"] == [None] * 6
