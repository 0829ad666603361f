"""Exact percentiles and the order-statistic confidence interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.contract.stats import min_samples, percentile, quantile_ci, quantile_ci_ranks, summarize


def test_summary_matches_numpy_linear_interpolation_and_ignores_nan() -> None:
    x = np.array([0.3, 0.1, np.nan, 0.2, 0.9, 0.5])
    s = summarize(x)
    finite = x[np.isfinite(x)]
    assert s.n == 5
    assert s.p50 == pytest.approx(0.3)
    assert s.p90 == pytest.approx(float(np.percentile(finite, 90)))
    assert s.p99 == pytest.approx(0.5 + 0.96 * 0.4)
    assert s.mean == pytest.approx(0.4)
    assert s.std == pytest.approx(float(np.std(finite, ddof=1)))


def test_summary_of_nothing_and_of_one() -> None:
    empty = summarize(np.array([]))
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.p50, empty.mean, empty.std))
    one = summarize(np.array([2.0]))
    assert (one.n, one.p50, one.p99, one.mean) == (1, 2.0, 2.0, 2.0) and math.isnan(one.std)
    assert math.isnan(percentile(np.array([np.nan]), 95))


def test_float32_input_is_summarised_without_losing_precision_in_the_mean() -> None:
    x = np.full(1_000_001, 0.1, dtype=np.float32)
    assert summarize(x).mean == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize(("q", "n"), [(0.5, 6), (0.9, 36), (0.95, 72), (0.99, 368), (0.05, 72)])
def test_min_samples(q: float, n: int) -> None:
    assert min_samples(q) == n
    assert quantile_ci_ranks(n, q) is not None
    assert quantile_ci_ranks(n - 1, q) is None


def test_median_ranks_match_the_published_table() -> None:
    # n = 100: the 95 % distribution-free CI of the median is [x(40), x(61)] (e.g. Conover, table A3)
    ranks = quantile_ci_ranks(100, 0.5)
    assert ranks is not None and (ranks.low, ranks.high) == (40, 61)
    assert ranks.coverage >= 0.95


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3000), q=st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_ranks_exist_exactly_from_min_samples_and_cover(n: int, q: float) -> None:
    ranks = quantile_ci_ranks(n, q)
    assert (ranks is not None) == (n >= min_samples(q))
    if ranks is not None:
        assert 1 <= ranks.low <= ranks.high <= n
        assert ranks.coverage >= 0.95 - 1e-9


def test_ci_values_are_order_statistics_around_the_estimate() -> None:
    x = np.arange(1, 201, dtype=float)
    ci = quantile_ci(x, 95)
    ranks = quantile_ci_ranks(200, 0.95)
    assert ranks is not None
    assert (ci.low, ci.high) == (float(ranks.low), float(ranks.high))
    assert ci.low <= percentile(x, 95) <= ci.high
    too_few = quantile_ci(x[:50], 95)
    assert not too_few.available and too_few.min_samples == 72 and too_few.n == 50


def test_ci_covers_the_true_quantile_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    true_p95 = -math.log(0.05)  # exponential(1)
    trials = 400
    covered = 0
    for _ in range(trials):
        ci = quantile_ci(rng.exponential(1.0, 150), 95)
        covered += ci.low <= true_p95 <= ci.high
    assert covered / trials >= 0.92  # nominal ≥ 0.95; binomial noise of 400 trials is ~1 %


def test_large_n_is_fast_and_finite() -> None:
    ranks = quantile_ci_ranks(2_000_000, 0.99)
    assert ranks is not None
    assert ranks.low < 0.99 * 2_000_000 < ranks.high
    assert ranks.high - ranks.low < 2_000  # ~ ±2σ of Binomial(2e6, 0.99)


@pytest.mark.parametrize(("n", "p"), [(1, 0.5), (20, 0.05), (999, 0.01), (250_000, 0.05), (1_000_000, 0.99)])
def test_a_binomial_cdf_cut_short_is_the_start_of_the_whole_one_bit_for_bit(n: int, p: float) -> None:
    """binomial_le computes the CDF only up to its k: the same numbers as the whole CDF at k, and
    against the exact sum of the pmf (math.comb) where that is cheap."""
    from fmbench_k8s.contract.stats import binomial_cdf, binomial_le

    whole = binomial_cdf(n, p)
    assert whole.size == n + 1
    for k in sorted({0, 1, n // 100, n // 20, n // 2, n - 1}):
        assert binomial_cdf(n, p, upto=k).tobytes() == whole[: k + 1].tobytes()
        assert binomial_le(n, p, k) == float(whole[k])
    if n <= 999:
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n // 20 + 1))
        assert binomial_le(n, p, n // 20) == pytest.approx(exact, rel=1e-9)
