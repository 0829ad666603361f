"""Stage metrics against hand-computed fixtures (docs/metrics.md has the definitions)."""

from __future__ import annotations

import math
from typing import Any
from unittest.mock import patch

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fmbench_k8s.analysis.metrics as metrics_module
from fmbench_k8s.analysis.frames import to_frame
from fmbench_k8s.analysis.metrics import AccountingError, StageMetrics, _ItlSource, stage_metrics
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize
from fmbench_k8s.api.spec import Slo
from fmbench_k8s.contract.records import SCHEMA, StageInfo, itl_bytes, itl_gaps
from fmbench_k8s.contract.verdict import SloRule

WINDOW = StageInfo(variant="v", stage=0, target_concurrency=4, start=90, steady_start=100, steady_end=110, end=120,
                   workers=1)  # fmt: skip


def slo(metric: str = "e2e", q: float = 50, bound: float = 3.0, max_error_rate: float = 0.5) -> SloRule:
    return SloRule(Slo.model_validate({"latency": {"metric": metric, "percentile": q, "maxSeconds": bound},
                                       "maxErrorRate": max_error_rate}))  # fmt: skip


def req(i: int, sched: float, outcome: str = "ok", *, ttft: float = 0.1, e2e: float = 1.0, out: int = 10,
        prompt: int = 100, itl: list[float] | None = None, error: str | None = None) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {
        "variant": "v", "stage": 0, "target_concurrency": 4.0, "request_id": f"r{i}", "worker": "w0",
        "t_scheduled": sched, "t_sent": sched + 0.1, "prompt_tokens": prompt, "outcome": outcome,
        "ok": outcome == "ok", "error": error, "token_source": "server",
    }  # fmt: skip
    if outcome == "ok":
        row.update({
            "t_first_token": sched + 0.1 + ttft, "t_last_token": sched + 0.1 + e2e, "t_end": sched + 0.1 + e2e,
            "ttft_s": ttft, "e2e_s": e2e, "output_tokens": out, "itl_s": itl_bytes(itl or []),
            "itl_max_s": max(itl) if itl else None,
        })  # fmt: skip
    return row


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return to_frame(pa.Table.from_pylist(rows, schema=SCHEMA))


def fixture_rows() -> list[dict[str, Any]]:
    return [
        req(1, 99.0, e2e=9.0),  # warm-up: counted, not in the window
        req(2, 100.0, ttft=0.5, e2e=2.5, out=5, prompt=100, itl=[0.4, 0.5, 0.6, 0.5]),
        req(3, 102.0, ttft=1.0, e2e=1.0, out=1, prompt=200),  # one token: no TPOT
        req(4, 104.0, "error", error="http_429"),
        req(5, 106.0, "incomplete"),
        req(6, 108.0, ttft=0.2, e2e=4.2, out=11, prompt=300, itl=[0.4] * 10),
        req(7, 110.0, e2e=9.0),  # at steady_end: outside [steady_start, steady_end)
    ]


def only(metrics: list[StageMetrics]) -> StageMetrics:
    assert len(metrics) == 1
    return metrics[0]


def test_hand_computed_stage() -> None:
    m = only(stage_metrics(frame(fixture_rows()), [WINDOW], slo()))
    assert (m.requests, m.ok, m.errors, m.incomplete) == (7, 5, 1, 1)
    assert m.errors_by_reason == {"http_429": 1}
    assert (m.steady_requests, m.steady_ok, m.steady_errors, m.steady_incomplete) == (5, 3, 1, 1)
    assert m.error_rate == pytest.approx(2 / 5)
    assert m.throughput_rpm == pytest.approx(5 / 10 * 60)
    assert m.output_tokens_per_s == pytest.approx((5 + 1 + 11) / 10)
    assert m.input_tokens_per_s == pytest.approx((100 + 200 + 300) / 10)
    assert m.mean_output_tokens == pytest.approx(17 / 3)

    ttft = m.latency["ttft"]  # [0.2, 0.5, 1.0]
    assert ttft.n == 3
    assert [ttft.p50, ttft.p90, ttft.mean] == pytest.approx([0.5, 0.9, 1.7 / 3])
    assert ttft.std == pytest.approx(float(np.std([0.2, 0.5, 1.0], ddof=1)))
    tpot = m.latency["tpot"]  # (2.5-0.5)/4 = 0.5, (4.2-0.2)/10 = 0.4; the 1-token request has none
    assert tpot.n == 2 and tpot.p50 == pytest.approx(0.45)
    itl = m.latency["itl"]  # every gap: 11 × 0.4, 2 × 0.5, 0.6
    assert itl.n == 14 and [itl.p50, itl.mean] == pytest.approx([0.4, 6.0 / 14])
    e2e = m.latency["e2e"]
    assert e2e.n == 3 and [e2e.p50, e2e.p99] == pytest.approx([2.5, 2.5 + 0.98 * 1.7])
    assert sorted(m.samples["ttft"].tolist()) == pytest.approx([0.2, 0.5, 1.0])
    # latency over time: each ok request of the window, when it was scheduled in it, and its SLO value
    assert m.samples["at"].tolist() == pytest.approx([0.0, 2.0, 8.0])
    assert m.samples["slo"].tolist() == pytest.approx([2.5, 1.0, 4.2])  # p50 e2e: each one's e2e
    ntpot = m.latency["ntpot"]  # 2.5/5, 1.0/1, 4.2/11
    assert ntpot.mean == pytest.approx((0.5 + 1.0 + 4.2 / 11) / 3)
    assert m.latency["e2eFromScheduled"].p50 == pytest.approx(2.6)  # t_end - t_scheduled, 0.1 s send lag

    # SLO p50 e2e ≤ 3 s: met by the point estimate, but 3 samples cannot bound a median at 95 %
    assert m.slo_value == pytest.approx(2.5)
    assert m.goodput_rps == pytest.approx(2 / 10)  # 2.5 and 1.0 meet, 4.2 does not
    assert m.slo_attainment == pytest.approx(2 / 5)  # of all scheduled in the window
    assert m.verdict == "insufficient-samples"
    assert not m.meets_slo
    assert m.slo_ci.min_samples == 6
    assert "needs ≥ 6 samples" in m.failures[0]


def test_error_budget_is_checked_before_latency() -> None:
    m = only(stage_metrics(frame(fixture_rows()), [WINDOW], slo(bound=1.0, max_error_rate=0.1)))
    assert m.verdict == "errors"
    assert m.failures[0] == "error rate 40.0% > 10.0%"
    # 2 of 3 samples above 1 s do not show that the median is: the latency is not decided
    assert m.failures[1].startswith("insufficient samples: p50 e2e needs ≥ 6 samples")


def test_stage_meets_slo_with_enough_samples() -> None:
    rows = [req(i, 100 + i * 0.1, e2e=1.0 + i / 100) for i in range(80)]
    m = only(stage_metrics(frame(rows), [WINDOW], slo(q=95, bound=2.0, max_error_rate=0.0)))
    assert m.meets_slo and m.verdict == "meets" and m.failures == ()
    assert m.slo_ci.available and m.slo_ci.low <= m.slo_value <= m.slo_ci.high
    assert m.goodput_rps == pytest.approx(8.0)
    assert m.slo_attainment == 1.0


def test_one_output_token_has_no_tpot() -> None:
    rows = [req(i, 100 + i, ttft=0.3, e2e=0.3, out=1) for i in range(8)]
    m = only(stage_metrics(frame(rows), [WINDOW], slo(metric="tpot", bound=0.05)))
    assert m.latency["tpot"].n == 0 and math.isnan(m.latency["tpot"].p50)
    assert m.latency["ntpot"].p50 == pytest.approx(0.3)
    assert math.isnan(m.slo_value)
    assert m.verdict == "insufficient-samples"  # nothing to judge the TPOT bound by
    assert m.goodput_rps == pytest.approx(8 / 10)  # no decode gap can violate it


def test_all_error_stage() -> None:
    rows = [req(i, 100 + i, "error", error="timeout" if i % 2 else "http_500") for i in range(6)]
    m = only(stage_metrics(frame(rows), [WINDOW], slo()))
    assert (m.requests, m.ok, m.errors, m.incomplete) == (6, 0, 6, 0)
    assert m.errors_by_reason == {"timeout": 3, "http_500": 3}
    assert m.error_rate == 1.0
    assert m.throughput_rpm == pytest.approx(36.0)  # scheduled requests, as defined
    assert m.latency["e2e"].n == 0 and math.isnan(m.latency["e2e"].p95)
    assert m.goodput_rps == 0 and m.slo_attainment == 0
    assert m.verdict == "errors" and not m.meets_slo
    assert math.isnan(m.mean_output_tokens)


def test_error_without_reason_is_counted_as_unknown() -> None:
    m = only(stage_metrics(frame([req(1, 101, "error")]), [WINDOW], slo()))
    assert m.errors_by_reason == {"unknown": 1}


def test_incomplete_requests_count_as_failures() -> None:
    rows = [req(i, 100 + i * 0.1) for i in range(90)] + [req(100 + i, 109, "incomplete") for i in range(10)]
    m = only(stage_metrics(frame(rows), [WINDOW], slo(max_error_rate=0.05)))
    assert (m.ok, m.incomplete, m.steady_incomplete) == (90, 10, 10)
    assert m.error_rate == pytest.approx(0.1)
    assert m.verdict == "errors"


def test_stage_without_records_is_reported_empty() -> None:
    m = only(stage_metrics(frame([]), [WINDOW], slo()))
    assert (m.requests, m.steady_requests, m.verdict) == (0, 0, "no-requests")
    assert math.isnan(m.error_rate)


def test_missing_stage_info_is_inferred_from_records_and_noted() -> None:
    rows = fixture_rows()
    for r in rows:
        r["in_steady_window"] = 100 <= r["t_scheduled"] < 110
    m = only(stage_metrics(frame(rows), [], slo()))
    assert m.window_start == 100 and m.window_end == pytest.approx(108, abs=1e-5)
    assert m.steady_requests == 5
    assert "inferred" in m.notes[0]


def test_several_variants_and_stages_are_sorted() -> None:
    df, infos = synthesize([SyntheticVariant("b", levels=(1, 2)), SyntheticVariant("a", levels=(1,))], stage_s=5)
    got = [(m.variant, m.stage) for m in stage_metrics(df, infos, slo())]
    assert got == [("a", 0), ("b", 0), ("b", 1)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outcome": None}, "no valid outcome"),
        ({"outcome": "cancelled"}, "no valid outcome"),
        ({"ok": False}, "ok=False but outcome 'ok'"),
        ({"request_id": "r2"}, "duplicate record"),
    ],
)
def test_accounting_invariant_violations_raise(change: dict[str, Any], message: str) -> None:
    rows = fixture_rows()
    rows[2].update(change)
    with pytest.raises(AccountingError, match=message):
        stage_metrics(frame(rows), [WINDOW], slo())


def test_itl_from_python_lists_matches_the_recorded_bytes() -> None:
    df = frame(fixture_rows())
    plain = df.copy()
    plain["itl_s"] = pd.Series(
        [None if v is pd.NA else itl_gaps(v).tolist() for v in df["itl_s"].tolist()], dtype=object
    )
    assert plain["itl_s"].dtype == object
    a = only(stage_metrics(df, [WINDOW], slo())).latency["itl"]
    b = only(stage_metrics(plain, [WINDOW], slo())).latency["itl"]
    assert a == b


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=1, max_size=60),
    picks=st.lists(st.booleans(), min_size=60, max_size=60),
    nulls=st.lists(st.booleans(), min_size=60, max_size=60),
    runs_path=st.booleans(),
)
def test_itl_values_equal_naive_concatenation(
    lengths: list[int], picks: list[bool], nulls: list[bool], runs_path: bool
) -> None:
    """Null lists give nothing even when their offsets span values (Arrow leaves those undefined),
    and a row between two picked ones keeps them apart only if it holds values."""
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    values = np.arange(offsets[-1], dtype=np.float32)
    mask = np.array(nulls[: len(lengths)])
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(mask))
    rows = np.array([i for i in range(len(lengths)) if picks[i]], dtype=np.intp)
    expected = [v for r in rows if not mask[r] for v in values[offsets[r] : offsets[r + 1]].tolist()]
    source = _ItlSource(pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([arr]))))
    # runs_path False forces the vectorised index path (taken when there are very many runs)
    with patch.object(metrics_module, "_MAX_RUNS", 1 << 30 if runs_path else 0):
        assert source.values(rows).array().tolist() == expected


def test_itl_source_spans_chunks() -> None:
    arr = pa.chunked_array([
        pa.array([[1.0, 2.0], None, [3.0]], pa.list_(pa.float32())),
        pa.array([[4.0], [5.0, 6.0]], pa.list_(pa.float32())).slice(0, 2),
    ])  # fmt: skip
    col = pd.Series(pd.arrays.ArrowExtensionArray(arr))
    src = _ItlSource(col)
    assert src.values(np.array([0, 2, 3, 4])).array().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert src.values(np.array([1])).array().tolist() == []
    assert src.values(np.array([], dtype=np.intp)).array().tolist() == []


def test_goodput_counts_the_requests_within_every_bound() -> None:
    """DistServe's goodput: the steady window's ok requests within all latency bounds at once, per
    second; against the records, with bounds that each cut a different share of the requests."""
    frame, stages = synthesize([SyntheticVariant("v", levels=(4,), ttft_s=0.2, itl_s=0.02, jitter=0.3,
                                                 requests_per_stage=3000)], stage_s=60, seed=11)  # fmt: skip
    steady = frame[frame["in_steady_window"] & (frame["outcome"] == "ok")]
    ttft_bound, e2e_bound = float(steady["ttft_s"].quantile(0.8)), float(steady["e2e_s"].quantile(0.7))
    slo = Slo.model_validate({
        "latency": {"metric": "e2e", "percentile": 50, "maxSeconds": e2e_bound},
        "additionalLatency": [{"metric": "ttft", "percentile": 50, "maxSeconds": ttft_bound}],
    })  # fmt: skip
    [m] = stage_metrics(frame, stages, SloRule(slo))
    within = int(((steady["ttft_s"] <= ttft_bound) & (steady["e2e_s"] <= e2e_bound)).sum())
    assert within < min((steady["ttft_s"] <= ttft_bound).sum(), (steady["e2e_s"] <= e2e_bound).sum())
    assert m.goodput_rps == pytest.approx(within / stages[0].steady_seconds, rel=1e-12)
    assert m.slo_attainment == pytest.approx(within / m.steady_requests, rel=1e-12)
    assert [(b.metric, b.outcome) for b in m.bounds] == [("e2e", "meets"), ("ttft", "meets")]
