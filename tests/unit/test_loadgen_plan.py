"""Load levels, the SLO search and the stage verdict (fmbench_k8s.loadgen.plan)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.api.spec import Levels, Load, Slo
from fmbench_k8s.loadgen.plan import (
    Planner,
    Search,
    candidate_levels,
    endpoint_lost,
    planner_for,
    split_concurrency,
)


def _slo(metric: str = "e2e", p: float = 95, max_s: float = 1.0, err: float = 0.01) -> Slo:
    return Slo.model_validate({"latency": {"metric": metric, "percentile": p, "maxSeconds": max_s},
                               "maxErrorRate": err})  # fmt: skip


def _run(planner: Planner, capacity: float) -> list[float]:
    """Drive a planner against a server that meets the SLO exactly up to ``capacity``."""
    tried = []
    while (level := planner.next_level()) is not None:
        tried.append(level)
        planner.record(level, level <= capacity, None if level <= capacity else "too slow")
    return tried


def test_candidate_levels_double_from_min_and_include_max() -> None:
    assert candidate_levels(Levels(min=1, max=64), integer=True) == [1, 2, 4, 8, 16, 32, 64]
    assert candidate_levels(Levels(min=3, max=20), integer=True) == [3, 6, 12, 20]
    assert candidate_levels(Levels(min=0.5, max=3), integer=False) == [0.5, 1, 2, 3]
    assert candidate_levels(Levels(levels=[8, 2.4, 8, 0.3]), integer=True) == [8, 2, 1]


def test_sweep_runs_every_level_in_order_and_fixed_runs_one() -> None:
    load = Load.model_validate({"mode": "sweep", "concurrency": {"levels": [4, 1, 2]}})
    planner = planner_for(load)
    assert _run(planner, capacity=2) == [4, 1, 2]
    assert planner.best == 2
    fixed = planner_for(Load.model_validate({"mode": "fixed", "concurrency": {"min": 5, "max": 5}}))
    assert _run(fixed, capacity=100) == [5]


def test_search_brackets_by_doubling_then_bisects_to_the_exact_integer_capacity() -> None:
    load = Load.model_validate({"mode": "search", "concurrency": {"min": 4, "max": 16}, "tolerance": 0.01})
    planner = planner_for(load)
    assert _run(planner, capacity=8) == [4, 8, 16, 12, 10, 9]
    assert planner.best == 8


def test_search_stops_at_the_lowest_level_with_its_reason() -> None:
    planner = planner_for(Load.model_validate({"mode": "search", "concurrency": {"min": 2, "max": 64}}))
    assert _run(planner, capacity=1) == [2]
    assert planner.best is None
    assert planner.failure_reason == "no level met the SLO; at 2: too slow"


def test_search_meeting_the_slo_at_max_says_capacity_may_be_higher() -> None:
    planner = planner_for(Load.model_validate({"mode": "search", "concurrency": {"min": 1, "max": 10}}))
    assert _run(planner, capacity=1000) == [1, 2, 4, 8, 10]
    assert planner.best == 10
    assert planner.note is not None and "highest level" in planner.note


def test_search_respects_max_stages() -> None:
    load = Load.model_validate({"mode": "search", "concurrency": {"min": 1, "max": 1024}, "maxStages": 4,
                                "tolerance": 0.01})  # fmt: skip
    planner = planner_for(load)
    assert _run(planner, capacity=300) == [1, 2, 4, 8]
    assert planner.best == 8 and planner.note is not None and "maxStages" in planner.note


def test_search_over_an_explicit_list_bisects_by_index() -> None:
    load = Load.model_validate({"mode": "search", "concurrency": {"levels": [1, 2, 3, 5, 8, 13, 21, 34]}})
    planner = planner_for(load)
    tried = _run(planner, capacity=14)
    assert planner.best == 13
    assert tried[0] == 1 and len(tried) <= 6


@settings(max_examples=200, deadline=None)
@given(lo=st.integers(1, 8), span=st.integers(0, 300), capacity=st.integers(1, 400),
       tolerance=st.sampled_from([0.01, 0.05, 0.1, 0.25]))  # fmt: skip
def test_integer_search_finds_capacity_within_tolerance(lo: int, span: int, capacity: int, tolerance: float) -> None:
    hi = lo + span
    planner = Search(max_stages=100, lo=lo, hi=hi, integer=True, tolerance=tolerance)
    tried = _run(planner, capacity)
    assert all(lo <= level <= hi and float(level).is_integer() for level in tried)
    assert len(set(tried)) == len(tried), "a level was run twice"
    if capacity < lo:
        assert planner.best is None
        return
    truth = min(capacity, hi)
    best = planner.best
    assert best is not None and best <= truth
    # Converged: the next level up failed (or is beyond max) and is within the tolerance.
    assert truth == best or (truth - best) / best <= tolerance


@settings(max_examples=100, deadline=None)
@given(capacity=st.floats(0.5, 500), tolerance=st.sampled_from([0.02, 0.1]))
def test_rate_search_finds_capacity_within_tolerance(capacity: float, tolerance: float) -> None:
    planner = Search(max_stages=100, lo=1.0, hi=256.0, integer=False, tolerance=tolerance)
    _run(planner, capacity)
    if capacity < 1.0:
        assert planner.best is None
        return
    best = planner.best
    assert best is not None and best <= capacity
    assert (min(capacity, 256.0) - best) / best <= tolerance


def test_remaining_upper_bound_counts_down_to_zero() -> None:
    planner = planner_for(Load.model_validate({"mode": "search", "concurrency": {"min": 1, "max": 64}}))
    bounds = []
    while (level := planner.next_level()) is not None:
        bounds.append(planner.remaining_upper_bound())
        planner.record(level, level <= 20)
    assert bounds[0] >= len(bounds) - 1
    assert planner.remaining_upper_bound() == 0


def test_split_concurrency_distributes_every_slot_once() -> None:
    for total in range(0, 40):
        for workers in range(1, 7):
            shares = [split_concurrency(total, workers, k) for k in range(workers)]
            assert sum(shares) == total and max(shares) - min(shares) <= 1
    with pytest.raises(ValueError):
        split_concurrency(4, 2, 2)


def test_a_stage_needs_enough_requests_for_the_analysis_confidence_interval() -> None:
    from fmbench_k8s.api import parse_benchmark
    from fmbench_k8s.contract.stats import min_samples
    from fmbench_k8s.loadgen.plan import required_requests
    from tests.corpus import REPO

    doc = yaml.safe_load((REPO / "examples/quickstart.yaml").read_text())
    doc["spec"]["load"]["minRequestsPerStage"] = 10
    doc["spec"]["slo"]["latency"]["percentile"] = 95
    assert required_requests(parse_benchmark(doc).spec) == min_samples(0.95) == 72
    doc["spec"]["load"]["minRequestsPerStage"] = 500
    assert required_requests(parse_benchmark(doc).spec) == 500


def test_a_stage_lost_the_endpoint_when_refusals_alone_would_fail_the_error_rate() -> None:
    down = [{"connection_refused": 6, "truncated_stream": 2}, {"connection_refused": 3, "http_500": 9}]
    assert endpoint_lost(down, scheduled=100, max_error_rate=0.01) == "9 connection_refused"
    # timeouts, 5xx and cut streams are the server under load, not the server gone
    assert endpoint_lost([{"timeout": 50, "http_503": 50}], scheduled=100, max_error_rate=0.01) is None
    # a blip the SLO tolerates is not an outage
    assert endpoint_lost([{"dns_error": 1}], scheduled=100, max_error_rate=0.01) is None
    assert endpoint_lost([{"dns_error": 2, "host_unreachable": 1}], 100, 0.01) == "2 dns_error, 1 host_unreachable"
    assert endpoint_lost([], scheduled=0, max_error_rate=0.01) is None
