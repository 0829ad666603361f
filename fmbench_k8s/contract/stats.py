"""Exact percentiles and a distribution-free confidence interval for one percentile.

Percentiles are numpy's linear interpolation between order statistics (``method="linear"``, the
default of numpy and pandas), computed over every sample: never bucketed, never averaged across
batches.

The confidence interval for the q-quantile uses order statistics only (no assumption about the
latency distribution): the number of samples at or below the true quantile is Binomial(n, q), so
``[x(l), x(u)]`` (1-based order statistics) covers it with probability
``F(u-1) - F(l-1)`` where F is that binomial's CDF. We pick the narrowest symmetric-tail ranks
with at least ``confidence`` coverage. When even ``[x(1), x(n)]`` cannot reach it, n is too small
for that percentile and the SLO verdict is "insufficient samples".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fmbench_k8s.contract._radix import count_tops, gather

FloatArray = npt.NDArray[np.float64]

PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0)
CONFIDENCE: Final = 0.95


@dataclass(frozen=True)
class Summary:
    """Distribution summary of one latency metric (seconds); NaN where there are no samples."""

    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n < 2

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n, "p50": self.p50, "p90": self.p90, "p95": self.p95, "p99": self.p99,
            "mean": self.mean, "std": self.std,
        }  # fmt: skip


def _floating(values: npt.ArrayLike) -> npt.NDArray[np.floating]:
    x = np.asarray(values)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def samples(values: npt.ArrayLike) -> npt.NDArray[np.floating]:
    """The values that are samples: all but NaN ("no value", e.g. the TPOT of a one-token answer);
    +inf stays (a latency above every bound). No copy when there is no NaN; float32 stays float32."""
    x = _floating(values)
    nan = np.isnan(x)
    return x[~nan] if nan.any() else x


def finite(values: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """The finite values, without a copy when all are finite; float32 stays float32 (ITL gaps:
    hundreds of millions of them, where halving the bytes halves the time of the partition)."""
    x = _floating(values)
    ok = np.isfinite(x)
    return x if ok.all() else x[ok]


# From this many float32 samples on (a stage's ITL gaps), percentiles select by radix: faster
# than numpy's partition, and the same numbers (tests/unit/test_stats_percentiles.py).
RADIX_FROM: Final = 1 << 20
_FLOAT32_INF_TOP: Final = 0x7F80  # the top 16 bits of +inf; above: NaN, then negative values
_STD_LEAF: Final = 1 << 16
# numpy sums a float32 array into float64 a buffer of this many values at a time (NPY_BUFSIZE):
# each buffer pairwise, the buffers' sums one after the other.
_CAST_BLOCK: Final = 8192


class Concatenation:
    """Arrays end to end, not copied into one: a stage's ITL gaps are slices of its shards' buffers
    (hundreds of megabytes), and summarize() needs them in order only for the mean and the std,
    which it sums block by block as numpy would over the copy."""

    def __init__(self, pieces: Sequence[npt.NDArray[np.floating]]) -> None:
        self.pieces = [p for p in pieces if p.size]
        self.size = sum(int(p.size) for p in self.pieces)
        self._starts = np.cumsum([0] + [p.size for p in self.pieces])
        self.dtype = np.result_type(*self.pieces) if self.pieces else np.dtype(np.float64)

    def array(self) -> npt.NDArray[np.floating]:
        """The one array (the piece itself when there is one)."""
        if len(self.pieces) == 1:
            return self.pieces[0]
        return np.concatenate(self.pieces) if self.pieces else np.empty(0)

    def slice(self, lo: int, hi: int) -> npt.NDArray[np.floating]:
        """Values lo to hi: a view within one piece, a copy across pieces."""
        first = int(np.searchsorted(self._starts, lo, side="right")) - 1
        start = int(self._starts[first])
        if hi <= self._starts[first + 1]:
            return self.pieces[first][lo - start : hi - start]
        parts, at = [], first
        while lo < hi:
            start = int(self._starts[at])
            part = self.pieces[at][lo - start : hi - start]
            parts.append(part)
            lo += part.size
            at += 1
        return np.concatenate(parts)


def summarize(values: npt.NDArray[np.floating] | Concatenation) -> Summary:
    """Exact percentiles, mean and std of the finite values."""
    if isinstance(values, Concatenation):
        if values.size >= RADIX_FROM and values.dtype == np.float32:
            whole = _summarize_float32(values)
            if whole is not None:
                return whole
        values = values.array()
    x = finite(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    quantiles = radix_percentiles(x, PERCENTILES) if n >= RADIX_FROM and x.dtype == np.float32 else None
    if quantiles is None:
        quantiles = np.percentile(x, PERCENTILES)
    p50, p90, p95, p99 = (float(v) for v in quantiles)
    mean = float(np.mean(x, dtype=np.float64))
    std = sample_std(x) if n > 1 else math.nan
    return Summary(n, p50, p90, p95, p99, mean, std)


def _summarize_float32(x: Concatenation) -> Summary | None:
    """summarize(x.array()), bit for bit, with no copy of the values and no pass to find non-finite
    ones (the radix count sees them); None when a value is negative or not finite."""
    quantiles = radix_percentiles(x.pieces, PERCENTILES)
    if quantiles is None:
        return None
    p50, p90, p95, p99 = (float(v) for v in quantiles)
    total = cast_sum(x.pieces)
    return Summary(x.size, p50, p90, p95, p99, float(total / x.size), sample_std(x, total))


def cast_sum(pieces: Sequence[npt.NDArray[np.float32]]) -> np.float64:
    """``np.add.reduce(np.concatenate(pieces), dtype=np.float64)`` bit for bit: the concatenation's
    _CAST_BLOCK-value blocks each summed pairwise (a block across two pieces copied, ≤ 32 kB),
    the blocks' sums added in order."""
    sums: list[FloatArray] = []
    head = np.empty(0, dtype=np.float32)  # the start of a block that continues in the next piece
    for piece in pieces:
        rest = piece
        if head.size:
            take = min(rest.size, _CAST_BLOCK - head.size)
            head, rest = np.concatenate((head, rest[:take])), rest[take:]
            if head.size < _CAST_BLOCK:
                continue
            sums.append(np.add.reduce(head, dtype=np.float64, keepdims=True))
        whole = rest.size - rest.size % _CAST_BLOCK
        if whole:
            sums.append(np.add.reduce(rest[:whole].reshape(-1, _CAST_BLOCK), axis=1, dtype=np.float64))
        head = rest[whole:]
    if head.size:
        sums.append(np.add.reduce(head, dtype=np.float64, keepdims=True))
    total: np.float64 = np.cumsum(np.concatenate(sums))[-1] if sums else np.float64(0)
    return total


def radix_percentiles(
    x: npt.NDArray[np.float32] | Sequence[npt.NDArray[np.float32]], percentiles: tuple[float, ...]
) -> FloatArray | None:
    """``np.percentile(x, percentiles)`` of float32 ``x`` (or of the concatenation of the arrays
    ``x``), bit for bit, by selecting the order statistics it interpolates between with a radix
    count instead of a partition; None when a value is negative or not finite (their bit patterns
    do not sort as they do).

    A non-negative float32's bits, read as an unsigned integer, sort as the float does, so a count
    of the top 16 bits places every wanted rank in one bucket; only those buckets' values are
    gathered and partitioned. Both passes are C (fmbench_k8s/contract/_radix.c): one read of each
    value apiece, where numpy's bincount and boolean gather made four. The interpolation is
    numpy's "linear" method as numpy 2 computes it: virtual index (n − 1)·q, then
    ``a + (b − a)·γ``, or ``b − (b − a)·(1 − γ)`` from γ = 0.5 on."""
    pieces = [np.ascontiguousarray(p) for p in ([x] if isinstance(x, np.ndarray) else x)]
    n = sum(int(p.size) for p in pieces)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for p in pieces:
        count_tops(p, counts)
    if n == 0 or counts[_FLOAT32_INF_TOP:].any():  # +inf, NaN, or a sign bit (a negative value, -0.0)
        return None
    ends = np.cumsum(counts)
    virtual = (n - 1) * np.true_divide(np.asarray(percentiles), 100)
    below = np.floor(virtual)
    lower = below.astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    last = virtual >= n - 1
    lower[last] = upper[last] = n - 1
    ranks = np.concatenate([lower, upper])
    buckets = np.searchsorted(ends, ranks, side="right")
    wanted = np.zeros(1 << 16, dtype=np.bool_)
    wanted[buckets] = True
    chosen = np.empty(int(counts[wanted].sum()), dtype=np.float32)
    at = 0
    for p in pieces:
        at = gather(p, wanted, chosen, at)
    if at != chosen.size:  # the values changed between the two passes
        raise RuntimeError(f"radix_percentiles: counted {chosen.size} values in the chosen buckets, gathered {at}")
    # a rank's place in ``chosen`` sorted: its place in its bucket, after the chosen buckets below
    # it; a partition at those places puts there what a sort would
    kept_below = np.cumsum(np.where(wanted, counts, 0)) - counts
    starts = ends - counts
    places = ranks - starts[buckets] + kept_below[buckets]
    values = np.partition(chosen, np.unique(places))[places]
    a, b = values[: len(lower)], values[len(lower) :]
    gamma = virtual - below
    diff = b - a
    out: FloatArray = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def sample_std(x: npt.NDArray[np.floating] | Concatenation, total: np.float64 | None = None) -> float:
    """``np.std(x, ddof=1, dtype=np.float64)``, bit for bit, without its float64 copy of ``x``
    (twice the bytes of a stage's float32 ITL gaps, and fresh memory at each stage): numpy sums the
    squared deviations by pairwise summation, so the same tree is walked here, numpy summing each
    leaf of at most _STD_LEAF values in a small buffer. ``total``: Σx as numpy sums it, when known
    (it is needed for a Concatenation, whose pieces are float32)."""
    n = int(x.size)
    if total is None:
        assert isinstance(x, np.ndarray), "a Concatenation's sum comes from cast_sum"
        total = np.add.reduce(x, dtype=np.float64)
    mean = np.true_divide(np.asarray([total], dtype=np.float64), n)
    buffer = np.empty(min(n, _STD_LEAF), dtype=np.float64)  # one, reused: no allocation per leaf
    return float(np.sqrt(_squares(x, mean, buffer, 0, n) / (n - 1)))


def _squares(
    x: npt.NDArray[np.floating] | Concatenation, mean: FloatArray, buffer: FloatArray, lo: int, hi: int
) -> np.float64:
    """Σ (x[lo:hi] − mean)² as numpy's pairwise summation adds it up. A function of the module, not
    a closure: a recursive closure is a reference cycle, which would hold ``x`` until the next
    garbage collection."""
    if hi - lo <= _STD_LEAF:
        d = buffer[: hi - lo]
        np.subtract(x.slice(lo, hi) if isinstance(x, Concatenation) else x[lo:hi], mean, out=d)
        np.square(d, out=d)
        total: np.float64 = np.add.reduce(d)
        return total
    half = (hi - lo) // 2
    half -= half % 8  # where numpy's pairwise summation splits a block
    return _squares(x, mean, buffer, lo, lo + half) + _squares(x, mean, buffer, lo + half, hi)


def percentile(values: npt.NDArray[np.floating], q: float) -> float:
    """The q-th percentile (0 < q < 100) of the finite values, linear interpolation; NaN if none."""
    x = finite(values)
    return float(np.percentile(x, q)) if x.size else math.nan


def binomial_cdf(n: int, p: float, upto: int | None = None) -> FloatArray:
    """CDF of Binomial(n, p) at 0..upto (default n), computed in log space (n can be millions; no
    scipy). The sums run upward, so a shorter CDF is the longer one's start, bit for bit."""
    k = np.arange(n if upto is None else min(upto, n), dtype=np.float64)
    # log pmf(k+1) - log pmf(k) = log((n-k)/(k+1)) + log(p/(1-p)); cumulative sums give every pmf.
    steps = np.log((n - k) / (k + 1)) + math.log(p / (1 - p))
    log_pmf = np.concatenate(([n * math.log1p(-p)], n * math.log1p(-p) + np.cumsum(steps)))
    cdf: FloatArray = np.cumsum(np.exp(log_pmf))
    return np.minimum(cdf, 1.0)


# Above this many samples P(B <= k) comes from the normal approximation: the exact CDF would take
# one float per sample (an ITL SLO has hundreds of millions) and differs by far less than a rank.
_EXACT_MAX: Final = 1_000_000


def binomial_le(n: int, p: float, k: int) -> float:
    """P(B <= k) for B ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= _EXACT_MAX:
        return float(binomial_cdf(n, p, upto=k)[k])  # no more than it needs: k is often ≪ n
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return 0.5 * math.erfc(-(k + 0.5 - mean) / (sd * math.sqrt(2)))


@dataclass(frozen=True)
class Ranks:
    """1-based order-statistic ranks (low, high) of the interval, or None when n is too small."""

    low: int
    high: int
    coverage: float


def quantile_ci_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> Ranks | None:
    """Ranks of the distribution-free two-sided CI for the q-quantile (0 < q < 1) from n samples.

    Each tail gets at most (1 - confidence) / 2 of the probability; None when the sample is too
    small for both tails to fit inside the data.
    """
    if n < 1:
        return None
    tail = (1 - confidence) / 2
    if n > _EXACT_MAX:  # the normal approximation: far below a rank's width at this n
        z = math.sqrt(2) * _erfinv(1 - 2 * tail)
        half = z * math.sqrt(n * q * (1 - q))
        low, high = max(1, math.floor(n * q - half)), min(n, math.ceil(n * q + half) + 1)
        return Ranks(low, high, confidence)
    cdf = binomial_cdf(n, q)
    # low rank l: the largest l >= 1 with P(B <= l-1) <= tail, i.e. P(B < l) <= tail.
    low_candidates = np.nonzero(cdf[:n] <= tail)[0]
    # high rank u: the smallest u <= n with P(B <= u-1) >= 1 - tail.
    high_candidates = np.nonzero(cdf[:n] >= 1 - tail)[0]
    if low_candidates.size == 0 or high_candidates.size == 0:
        return None
    low = int(low_candidates[-1]) + 1
    high = int(high_candidates[0]) + 1
    coverage = float(cdf[high - 1] - (cdf[low - 2] if low >= 2 else 0.0))
    return Ranks(low, high, coverage)


def _erfinv(y: float) -> float:
    """The inverse error function by bisection (no scipy; called once per large interval)."""
    lo, hi = -6.0, 6.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def min_samples(q: float, confidence: float = CONFIDENCE) -> int:
    """Smallest n for which the q-quantile CI exists (e.g. 72 for p95 at 95%, 367 for p99).

    Both tails must fit: q^n <= tail (upper) and (1-q)^n <= tail (lower).
    """
    tail = (1 - confidence) / 2
    worst = max(q, 1 - q)
    return max(1, math.ceil(math.log(tail) / math.log(worst)))


@dataclass(frozen=True)
class QuantileCi:
    low: float
    high: float
    n: int
    confidence: float
    min_samples: int

    @property
    def available(self) -> bool:
        """Whether the interval exists (an end may be +inf: a latency above every bound)."""
        return not (math.isnan(self.low) or math.isnan(self.high))


def quantile_ci(values: npt.NDArray[np.floating], q: float, confidence: float = CONFIDENCE) -> QuantileCi:
    """The CI for the q-th percentile (0 < q < 100) as values; NaN bounds when n is too small.
    NaN values are not samples; +inf ones are (a latency above every bound)."""
    x = samples(values)
    need = min_samples(q / 100, confidence)
    ranks = quantile_ci_ranks(int(x.size), q / 100, confidence) if x.size >= need else None
    if ranks is None:
        return QuantileCi(math.nan, math.nan, int(x.size), confidence, need)
    part = np.partition(x, [ranks.low - 1, ranks.high - 1])
    return QuantileCi(float(part[ranks.low - 1]), float(part[ranks.high - 1]), int(x.size), confidence, need)
