"""Open-loop arrival schedules shared by workers (fmbench_k8s.loadgen.schedule)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fmbench_k8s.loadgen.schedule import arrival_offsets, stage_seed, worker_offsets


def ks_exponential(gaps: np.ndarray, rate: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic of ``gaps`` against Exp(rate), and its 1% critical value."""
    x = np.sort(np.asarray(gaps, dtype=float))
    n = x.size
    cdf = 1.0 - np.exp(-rate * x)
    d_plus = np.max(np.arange(1, n + 1) / n - cdf)
    d_minus = np.max(cdf - np.arange(0, n) / n)
    return float(max(d_plus, d_minus)), 1.628 / math.sqrt(n)


def _take(it: object, until: float) -> list[float]:
    return list(itertools.takewhile(lambda t: t < until, it))  # type: ignore[arg-type]


def test_constant_arrivals_are_evenly_spaced() -> None:
    offsets = _take(arrival_offsets("constant", 4.0, "s"), 10.0)
    assert len(offsets) == 40
    assert np.allclose(np.diff(offsets), 0.25)


def test_poisson_arrivals_are_reproducible_and_exponential() -> None:
    seed = stage_seed(7, "v", 3)
    a = _take(arrival_offsets("poisson", 50.0, seed), 200.0)
    b = _take(arrival_offsets("poisson", 50.0, seed), 200.0)
    assert a == b
    assert _take(arrival_offsets("poisson", 50.0, stage_seed(7, "v", 4)), 200.0) != a
    assert len(a) / 200.0 == pytest.approx(50.0, rel=0.03)
    d, critical = ks_exponential(np.diff(a), 50.0)
    assert d < critical
    # ... and the statistic does notice a process that is not Poisson.
    d_const, _ = ks_exponential(np.diff(_take(arrival_offsets("constant", 50.0, seed), 200.0)), 50.0)
    assert d_const > critical


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_partition_the_global_schedule_exactly(workers: int) -> None:
    seed = stage_seed(0, "v", 0)
    horizon = 30.0
    glob = _take(arrival_offsets("poisson", 20.0, seed), horizon)
    parts = [list(itertools.takewhile(lambda p: p[1] < horizon, worker_offsets("poisson", 20.0, seed, k, workers)))
             for k in range(workers)]  # fmt: skip
    union = sorted(p for part in parts for p in part)
    assert [n for n, _ in union] == list(range(len(glob)))
    assert [t for _, t in union] == glob
    assert all(n % workers == k for k, part in enumerate(parts) for n, _ in part)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets("poisson", 0, "s")
    with pytest.raises(ValueError, match="arrival"):
        arrival_offsets("bursty", 1, "s")
    with pytest.raises(ValueError, match="worker index"):
        worker_offsets("constant", 1, "s", 2, 2)
