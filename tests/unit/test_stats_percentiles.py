"""The radix selection of percentiles, the buffered standard deviation and the summary of arrays
end to end (contract/stats.py) give numpy's numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fmbench_k8s.contract.stats import (
    PERCENTILES,
    RADIX_FROM,
    Concatenation,
    cast_sum,
    radix_percentiles,
    sample_std,
    summarize,
)

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


def _split(rng: np.random.Generator, x: np.ndarray, pieces: int) -> list[np.ndarray]:
    """``x`` cut at random places, with some tiny and some empty pieces (a shard with one answer,
    or none, in the window) and one cut on a block boundary."""
    cuts = np.sort(np.concatenate([rng.integers(0, x.size, pieces), [8192, 8193, 8194, 3 * 8192]]))
    return [x[a:b] for a, b in zip([0, *cuts], [*cuts, x.size], strict=True)]


@pytest.mark.parametrize("n", [1, 5, 8191, 8192, 8193, 100_003, 1_000_037])
@pytest.mark.parametrize("pieces", [1, 3, 40])
def test_cast_sum_and_std_of_pieces_are_numpys_over_the_copy(n: int, pieces: int) -> None:
    rng = np.random.default_rng(n + pieces)
    x = (0.01 + rng.gamma(4, 0.003, n) * rng.choice([1.0, 1000.0], n)).astype(np.float32)
    split = [p for p in _split(rng, x, pieces) if p.size or rng.random() < 0.5]
    joined = Concatenation(split)
    assert joined.size == n and joined.array().tobytes() == x.tobytes()
    assert cast_sum(split) == np.add.reduce(x, dtype=np.float64)
    if n > 1:
        assert sample_std(joined, cast_sum(split)) == float(np.std(x, ddof=1, dtype=np.float64))


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_summary_of_pieces_is_the_summary_of_their_copy(name: str, make: object) -> None:
    """Above RADIX_FROM float32 pieces take the no-copy path; the numbers are those of one array."""
    rng = np.random.default_rng(len(name))
    x = np.asarray(make(rng, RADIX_FROM + 12_345), dtype=np.float32)  # type: ignore[operator]
    split = _split(rng, x, 7)
    assert summarize(Concatenation(split)) == summarize(x)
    assert radix_percentiles(split, PERCENTILES).tobytes() == np.percentile(x, PERCENTILES).tobytes()  # type: ignore[union-attr]


@pytest.mark.parametrize("odd", [np.inf, np.nan, -0.5])
def test_pieces_with_a_non_finite_or_negative_value_are_summarized_as_one_array(odd: float) -> None:
    rng = np.random.default_rng(3)
    x = (0.01 + rng.gamma(4, 0.003, RADIX_FROM + 5)).astype(np.float32)
    x[777_777] = odd
    split = _split(rng, x, 5)
    assert radix_percentiles(split, PERCENTILES) is None
    summary = summarize(Concatenation(split))
    assert summary == summarize(x)
    assert summary.n == RADIX_FROM + 5 - (not np.isfinite(odd))  # a summary is of the finite values


def test_a_strided_piece_is_read_as_its_values() -> None:
    """A column slice of a wider array is not contiguous: the C passes read its copy, not its memory."""
    rng = np.random.default_rng(5)
    wide = (0.01 + rng.gamma(4, 0.003, (2_000, 3))).astype(np.float32)
    got = radix_percentiles([wide[:, 1], wide[:7, 2]], PERCENTILES)
    want = np.percentile(np.concatenate([wide[:, 1], wide[:7, 2]]), PERCENTILES)
    assert got is not None and got.tobytes() == want.tobytes()


def test_the_c_passes_refuse_what_they_cannot_read() -> None:
    from fmbench_k8s.contract._radix import count_tops, gather

    counts = np.zeros(1 << 16, dtype=np.int64)
    with pytest.raises(TypeError, match="values: a contiguous float32 array"):
        count_tops(np.zeros(4, dtype=np.float64), counts)
    with pytest.raises(ValueError, match="counts: 65536 buckets"):
        count_tops(np.zeros(4, dtype=np.float32), np.zeros(10, dtype=np.int64))
    values = np.array([1.0, 2.0, np.nextafter(np.float32(1), 2), 3.0], dtype=np.float32)
    count_tops(values, counts)
    assert counts.sum() == 4 and counts[values.view(np.uint32) >> 16].tolist() == [2, 1, 2, 1]  # 1.0's bucket: two
    wanted = np.zeros(1 << 16, dtype=np.bool_)
    wanted[values[[0, 3]].view(np.uint32) >> 16] = True
    out = np.full(4, -1.0, dtype=np.float32)
    assert gather(values, wanted, out, 1) == 4 and out[1:].tolist() == [1.0, values[2], 3.0]
    with pytest.raises(ValueError, match="out: too small for the marked values"):
        gather(values, wanted, np.empty(2, dtype=np.float32), 0)
    with pytest.raises(ValueError, match="at: outside out"):
        gather(values, wanted, out, 5)
