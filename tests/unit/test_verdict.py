"""The one SLO verdict (fmbench_k8s.contract.verdict): its rule, and that the load generator's
master and the analysis reach the same verdict from the same stage."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.analysis.frames import to_frame
from fmbench_k8s.analysis.metrics import stage_metrics
from fmbench_k8s.api.spec import Slo
from fmbench_k8s.contract.records import SCHEMA, StageInfo
from fmbench_k8s.contract.stats import quantile_ci
from fmbench_k8s.contract.verdict import SloRule, StageCounts, judge, latency_test
from fmbench_k8s.loadgen import messages as m
from fmbench_k8s.loadgen.master import samples, window_counts


def rule(
    metric: str = "e2e", p: float = 90, max_s: float = 1.0, err: float = 0.05, min_requests: int = 1, *,
    also: list[dict[str, Any]] | None = None,
) -> SloRule:  # fmt: skip
    slo = Slo.model_validate({"latency": {"metric": metric, "percentile": p, "maxSeconds": max_s},
                              "maxErrorRate": err, "additionalLatency": also or []})  # fmt: skip
    return SloRule(slo, min_requests)


def ok(n: int) -> StageCounts:
    return StageCounts(scheduled=n, ok=n, errors=0, incomplete=0)


def test_meets_only_when_the_interval_is_below_the_bound() -> None:
    clear = judge(np.linspace(0.1, 0.5, 100), ok(100), rule())
    assert (clear.outcome, clear.kind, clear.reasons) == ("meets", "meets", ())
    assert clear.ci.high <= 1.0
    # p90 = 0.96 s ≤ 1 s, but 8 of 100 samples above the bound: the true p90 may be above it
    marginal = np.concatenate([np.linspace(0.1, 0.9, 92), np.full(8, 1.2)])
    v = judge(marginal, ok(100), rule())
    assert v.value <= 1.0 and (v.outcome, v.kind) == ("inconclusive", "uncertain")
    assert v.ci.low <= 1.0 < v.ci.high
    assert "inside the 95% confidence interval" in (v.reason or "")
    slow = judge(np.linspace(1.1, 2.0, 100), ok(100), rule())
    assert (slow.outcome, slow.kind) == ("fails", "latency") and slow.ci.low > 1.0
    assert slow.reason == "p90 e2e 1.91 s > 1 s"


def test_the_test_is_the_confidence_interval_compared_with_the_bound() -> None:
    """ "meets" ⇔ the CI's upper end ≤ bound and "fails" ⇔ its lower end > bound, wherever the
    two-sided interval exists (docs/metrics.md)."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(40, 400))
        q = float(rng.choice([50.0, 90.0, 95.0]))
        x = rng.lognormal(0.0, 0.5, n)
        bound = float(np.percentile(x, rng.uniform(30, 99.9)))
        ci = quantile_ci(x, q)
        if not ci.available:
            continue
        got = latency_test(n, int((x > bound).sum()), q / 100)
        assert (got == "meets") == (ci.high <= bound)
        assert (got == "fails") == (ci.low > bound)


def test_a_clear_failure_needs_no_minimum_sample() -> None:
    few = judge(np.full(20, 5.0), ok(20), rule())  # 20 samples cannot bound a p90 from both sides
    assert (few.outcome, few.kind) == ("fails", "latency")
    short = judge(np.full(20, 0.1), ok(20), rule())
    assert (short.outcome, short.kind) == ("inconclusive", "insufficient-samples")
    assert "needs ≥ 36 samples" in (short.reason or "")


def test_errors_fail_and_too_few_requests_is_inconclusive() -> None:
    values = np.full(100, 0.1)
    errs = judge(values, StageCounts(100, 94, 5, 1), rule())
    assert (errs.outcome, errs.kind) == ("fails", "errors") and errs.error_rate == pytest.approx(0.06)
    few = judge(values, ok(100), rule(min_requests=200))
    assert (few.outcome, few.kind) == ("inconclusive", "too-few-requests")
    assert "load.minRequestsPerStage 200" in (few.reason or "")
    none = judge([], StageCounts(0, 0, 0, 0), rule())
    assert (none.outcome, none.kind) == ("inconclusive", "no-requests")
    no_ok = judge([], StageCounts(10, 0, 0, 10), rule(err=1.0))
    assert (no_ok.outcome, no_ok.kind) == ("inconclusive", "insufficient-samples")


def test_damaged_values_never_meet_the_slo() -> None:
    """NaN is "no value" (TPOT of a one-token answer); +inf exceeds every bound; a negative
    latency is not one."""
    base = np.full(100, 0.1)
    with_inf = judge(np.concatenate([base[:80], np.full(20, np.inf)]), ok(100), rule())
    assert (with_inf.outcome, with_inf.above, with_inf.value) == ("fails", 20, math.inf)
    negative = judge(np.full(100, -1.0), ok(100), rule())
    assert (negative.outcome, negative.kind) == ("inconclusive", "invalid-values")
    nan = judge(np.concatenate([base[:30], np.full(70, np.nan)]), ok(100), rule())
    assert nan.outcome == "inconclusive" and nan.ci.n == 30


def test_an_interrupted_stage_is_not_a_verdict_on_its_level() -> None:
    v = judge(np.full(100, 5.0), StageCounts(100, 50, 0, 50), rule(), interrupted=True)
    assert (v.outcome, v.kind) == ("inconclusive", "interrupted")
    assert any("error rate" in r for r in v.reasons)  # what was seen is still said


# -- several bounds at once (slo.additionalLatency) ---------------------------------------------


def test_every_bound_must_hold_and_each_is_tested_on_its_own_samples() -> None:
    e2e, ttft = np.linspace(0.5, 0.9, 100), np.linspace(0.1, 0.3, 100)
    both = rule("e2e", 90, 1.0, also=[{"metric": "ttft", "percentile": 95, "maxSeconds": 0.5}])
    v = judge({"e2e": e2e, "ttft": ttft}, ok(100), both)
    assert v.outcome == "meets" and [(b.metric, b.outcome) for b in v.bounds] == [("e2e", "meets"), ("ttft", "meets")]
    assert v.value == pytest.approx(np.percentile(e2e, 90))  # the report's SLO column: slo.latency's
    assert v.bounds[1].value == pytest.approx(np.percentile(ttft, 95))
    tight = rule("e2e", 90, 1.0, also=[{"metric": "ttft", "percentile": 95, "maxSeconds": 0.2}])
    v = judge({"e2e": e2e, "ttft": ttft}, ok(100), tight)
    assert (v.outcome, v.kind) == ("fails", "latency") and v.reasons == ("p95 ttft 0.29 s > 0.2 s",)
    assert [b.outcome for b in v.bounds] == ["meets", "fails"]
    # a fail anywhere beats an open question elsewhere; shared reasons are said once
    marginal = rule("e2e", 90, float(np.percentile(e2e, 90)),
                    also=[{"metric": "ttft", "percentile": 95, "maxSeconds": 0.2}])  # fmt: skip
    v = judge({"e2e": e2e, "ttft": ttft}, StageCounts(100, 90, 10, 0), marginal)
    assert v.outcome == "fails" and v.kind == "errors"
    assert v.reasons.count("error rate 10.0% > 5.0%") == 1
    # an open question with nothing failing leaves the stage open
    v = judge({"e2e": e2e, "ttft": ttft}, ok(100), rule("e2e", 90, 1.0, also=[
        {"metric": "ttft", "percentile": 95, "maxSeconds": float(np.percentile(ttft, 95))}]))  # fmt: skip
    assert (v.outcome, v.kind, [b.outcome for b in v.bounds]) == (
        "inconclusive",
        "uncertain",
        ["meets", "inconclusive"],
    )


def test_a_bound_is_given_once() -> None:
    with pytest.raises(ValueError, match="each metric and percentile is bounded once; repeated: p90 e2e"):
        rule("e2e", 90, 1.0, also=[{"metric": "e2e", "percentile": 90, "maxSeconds": 2.0}])
    assert len(rule("e2e", 90, 1.0, also=[{"metric": "e2e", "percentile": 50, "maxSeconds": 0.5}]).slo.bounds) == 2


# -- the master and the analysis agree --------------------------------------------------------

INFO = StageInfo(variant="v", stage=0, target_concurrency=8, start=0.0, steady_start=10.0, steady_end=40.0,
                 end=50.0, workers=2)  # fmt: skip


def _row(i: int, request: tuple[float, str, float, int, int]) -> dict[str, Any]:
    sched, outcome, e2e, out, worker = request
    row: dict[str, Any] = {
        "variant": "v", "stage": 0, "target_concurrency": 8.0, "request_id": f"r{i}", "worker": f"w{worker}",
        "t_scheduled": sched, "t_sent": sched, "prompt_tokens": 100, "outcome": outcome, "ok": outcome == "ok",
        "error": "http_500" if outcome == "error" else None,
        "in_steady_window": INFO.steady_start <= sched < INFO.steady_end,
    }  # fmt: skip
    if outcome == "ok":
        ttft = e2e / 4
        tpot = (e2e - ttft) / (out - 1) if out > 1 else None
        row.update({"t_first_token": sched + ttft, "t_last_token": sched + e2e, "t_end": sched + e2e,
                    "ttft_s": ttft, "e2e_s": e2e, "tpot_s": tpot, "output_tokens": out})  # fmt: skip
    return row


def _worker_results(rows: list[dict[str, Any]], workers: int) -> list[m.StageResult]:
    """Each worker's StageResult for the rows it wrote, as loadgen/worker.py accounts them."""
    out = []
    for w in range(workers):
        mine = [r for r in rows if r["worker"] == f"w{w}" and r["in_steady_window"]]
        good = [r for r in mine if r["outcome"] == "ok"]
        out.append(m.StageResult(
            stage=0, worker=f"w{w}", client_id=f"c{w}", window_scheduled=len(mine), window_ok=len(good),
            window_errors=sum(r["outcome"] == "error" for r in mine),
            window_incomplete=sum(r["outcome"] == "incomplete" for r in mine),
            ttft=m.pack([r["ttft_s"] for r in good]), e2e=m.pack([r["e2e_s"] for r in good]),
            tpot=m.pack([math.nan if r["tpot_s"] is None else r["tpot_s"] for r in good]),
        ))  # fmt: skip
    return out


@settings(max_examples=150, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.floats(0.0, 45.0),
            st.sampled_from(["ok"] * 8 + ["error", "incomplete"]),
            st.floats(0.01, 3.0),
            st.integers(1, 40),
            st.integers(0, 1),
        ),
        max_size=160,
    ),
    metric=st.sampled_from(["e2e", "ttft", "tpot"]),
    percentile=st.sampled_from([50.0, 90.0, 95.0]),
    bound=st.floats(0.05, 3.0),
    max_error_rate=st.sampled_from([0.0, 0.05, 0.2]),
    min_requests=st.integers(1, 120),
    # a second bound on another metric, or none (slo.additionalLatency)
    also=st.one_of(st.none(), st.tuples(st.sampled_from(["e2e", "ttft", "tpot"]), st.floats(0.05, 3.0))),
)
def test_master_and_analysis_give_the_same_verdict(
    requests: list[tuple[float, str, float, int, int]], metric: str, percentile: float, bound: float, *,
    max_error_rate: float, min_requests: int, also: tuple[str, float] | None,
) -> None:  # fmt: skip
    rows = [_row(i, r) for i, r in enumerate(requests)]
    extra = [{"metric": also[0], "percentile": 99, "maxSeconds": also[1]}] if also and also[0] != metric else []
    r = rule(metric, percentile, bound, max_error_rate, min_requests, also=extra)
    results = _worker_results(rows, 2)
    master = judge(samples(results), window_counts(results), r)
    frame = to_frame(pa.Table.from_pylist(rows, schema=SCHEMA))
    [analysis] = stage_metrics(frame, [INFO], r)
    assert (analysis.outcome, analysis.verdict, analysis.failures) == (master.outcome, master.kind, master.reasons)
    assert analysis.slo_value == pytest.approx(master.value, nan_ok=True)
    assert analysis.error_rate == pytest.approx(master.error_rate, nan_ok=True)
    assert [(b.metric, b.outcome) for b in analysis.bounds] == [(b.metric, b.outcome) for b in master.bounds]
    assert len(master.bounds) == 1 + len(extra)
