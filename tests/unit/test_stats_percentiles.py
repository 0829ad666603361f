"""The radix selection of percentiles and the buffered standard deviation (contract/stats.py)
give numpy's numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fmbench_k8s.contract.stats import PERCENTILES, radix_percentiles, sample_std, summarize

CASES = [
    ("gamma gaps", lambda rng, n: 0.01 + rng.gamma(4, 0.003, n)),
    ("lognormal", lambda rng, n: rng.lognormal(-4, 1.5, n)),
    ("few distinct", lambda rng, n: rng.choice([0.0, 0.01, 0.02, 0.05], n)),
    ("with zeros and huge", lambda rng, n: np.concatenate([np.zeros(n // 3), rng.exponential(1, n - n // 3) * 1e30])),
    ("one bucket", lambda rng, n: 1.0 + rng.random(n) * 1e-4),
]


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1001, 65_537, 1_200_001])
def test_radix_percentiles_are_numpys_bit_for_bit(name: str, make: object, n: int) -> None:
    rng = np.random.default_rng(n)
    x = np.asarray(make(rng, n), dtype=np.float32)  # type: ignore[operator]
    rng.shuffle(x)
    quantiles = (*PERCENTILES, 0.0, 100.0, 33.3, 99.99)
    got = radix_percentiles(x, quantiles)
    assert got is not None
    want = np.percentile(x, quantiles)
    assert got.tobytes() == want.astype(np.float64).tobytes(), (got, want)


def test_negative_values_go_to_numpy_and_summaries_agree() -> None:
    rng = np.random.default_rng(0)
    assert radix_percentiles(np.array([0.5, -0.1, 0.2], dtype=np.float32), PERCENTILES) is None
    assert radix_percentiles(np.array([0.5, -0.0], dtype=np.float32), PERCENTILES) is None
    x = (0.01 + rng.gamma(4, 0.003, 1_100_000)).astype(np.float32)
    s = summarize(x)  # takes the radix path (float32, ≥ 2^20 samples)
    assert (s.p50, s.p90, s.p95, s.p99) == tuple(float(v) for v in np.percentile(x, PERCENTILES))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 9, 127, 129, 1000, 65_536, 65_537, 131_079, 1_048_583, 3_000_017])
def test_sample_std_is_numpys_bit_for_bit(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    x = (0.01 + rng.gamma(4, 0.003, n) * rng.choice([1.0, 100.0], n)).astype(dtype)
    assert sample_std(x) == float(np.std(x, ddof=1, dtype=np.float64))
