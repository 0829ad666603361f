"""The SLO verdict of one stage: the one rule the load generator's master (to steer the search)
and the analysis (for the report and the sizing) both apply. Definitions: docs/metrics.md.

A stage **meets** the SLO only when the data show it with 95 % confidence, **fails** only when
they show the opposite, and is **inconclusive** otherwise: too few samples, a bound inside the
percentile's confidence interval, an interrupted stage, or values that are not latencies.

The latency test is exact and distribution-free. With ``k`` of ``n`` samples above the bound,
the true q-quantile is above the bound with confidence 1 − α when P(Binomial(n, 1 − q) ≥ k) ≤ α,
and at or below it when P(Binomial(n, 1 − q) ≤ k) ≤ α (α = 2.5 % per side). These are the two
one-sided halves of the order-statistic interval in :mod:`fmbench_k8s.contract.stats`: "meets"
is the same as "the interval's upper end ≤ the bound", "fails" as "its lower end > the bound",
and each half also works where the other cannot exist yet (20 samples all far above a p90
bound are a failure, though 20 cannot bound a p90 from both sides).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from fmbench_k8s.api.spec import BenchmarkSpec, LatencySlo, Slo
from fmbench_k8s.contract.stats import CONFIDENCE, QuantileCi, binomial_le, quantile_ci, samples

Outcome = Literal["meets", "fails", "inconclusive"]
# Why, most decisive first; the verdict's ``kind`` is the first that applies.
Kind = Literal[
    "meets", "errors", "latency", "interrupted", "invalid-values", "no-requests", "too-few-requests",
    "insufficient-samples", "uncertain",
]  # fmt: skip


@dataclass(frozen=True)
class StageCounts:
    """Requests whose ``t_scheduled`` lies in the steady window, by outcome."""

    scheduled: int
    ok: int
    errors: int
    incomplete: int

    @property
    def error_rate(self) -> float:
        """(errors + incomplete) / scheduled; NaN without requests."""
        return (self.errors + self.incomplete) / self.scheduled if self.scheduled else math.nan


@dataclass(frozen=True)
class SloRule:
    """What a stage is judged by: the spec's SLO and its minimum number of requests per stage."""

    slo: Slo
    min_requests: int = 1

    @classmethod
    def of(cls, spec: BenchmarkSpec) -> SloRule:
        return cls(spec.slo, spec.load.min_requests_per_stage)


@dataclass(frozen=True)
class Bound:
    """One latency bound's test within a stage's verdict."""

    metric: str
    percentile: float
    max_seconds: float
    value: float  # the percentile (seconds); NaN without samples
    ci: QuantileCi
    outcome: Outcome


@dataclass(frozen=True)
class SloVerdict:
    outcome: Outcome
    kind: Kind
    value: float  # the SLO percentile of slo.latency's metric (seconds); NaN without samples
    ci: QuantileCi
    error_rate: float
    above: int  # samples above slo.latency's bound
    reasons: tuple[str, ...]  # one sentence per unmet condition, most decisive first
    bounds: tuple[Bound, ...] = ()  # every latency bound, slo.latency first

    @property
    def passed(self) -> bool:
        return self.outcome == "meets"

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) or None


def _fmt(seconds: float) -> str:
    return f"{seconds:.3g} s" if math.isfinite(seconds) else str(seconds)


def _percentile(x: npt.NDArray[np.floating], q: float) -> float:
    """Linear-interpolation percentile where +inf is a value (a latency above every bound)."""
    if x.size == 0:
        return math.nan
    if not np.isinf(x).any():
        return float(np.percentile(x, q))
    big = np.finfo(x.dtype).max
    value = float(np.percentile(np.where(np.isinf(x), big, x), q))
    largest = float(np.max(x[np.isfinite(x)], initial=-math.inf))
    return math.inf if value > largest else value  # interpolated towards an infinite sample


def latency_test(n: int, above: int, q: float, alpha: float = (1 - CONFIDENCE) / 2) -> Outcome:
    """Whether the q-quantile (0 < q < 1) is at or below the bound ("meets"), above it ("fails"),
    or not decided by ``above`` of ``n`` samples exceeding the bound (see the module docstring)."""
    if n == 0:
        return "inconclusive"
    if above > 0 and 1 - binomial_le(n, 1 - q, above - 1) <= alpha:
        return "fails"
    if binomial_le(n, 1 - q, above) <= alpha:
        return "meets"
    return "inconclusive"


def judge(
    values: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    counts: StageCounts,
    rule: SloRule,
    *,
    interrupted: bool = False,
) -> SloVerdict:
    """The verdict of a stage from the exact per-sample values of the SLO's metrics over the
    window's ok requests (for ``itl``: every gap) and the window's counts. ``values`` maps each
    bounded metric to its samples (an array alone: the samples of ``slo.latency``'s metric, the
    only bound). NaN values are "no value" (the TPOT of a one-token answer); +inf exceeds every
    bound; negative values are not latencies.

    With ``slo.additionalLatency`` every bound is tested as below: the stage fails if one fails,
    meets only if all meet; value, interval and ``above`` are ``slo.latency``'s, and ``bounds``
    holds each bound's own."""
    by_metric = values if isinstance(values, Mapping) else {rule.slo.latency.metric: values}
    each = [_judge_bound(by_metric[b.metric], b, counts, rule, interrupted) for b in rule.slo.bounds]
    first = each[0]
    bounds = tuple(Bound(b.metric, b.percentile, b.max_seconds, v.value, v.ci, v.outcome)
                   for b, v in zip(rule.slo.bounds, each, strict=True))  # fmt: skip
    if len(each) == 1:
        return replace(first, bounds=bounds)
    outcomes = {v.outcome for v in each}
    outcome: Outcome = "fails" if "fails" in outcomes else "inconclusive" if "inconclusive" in outcomes else "meets"
    decisive = next((v for v in each if v.outcome == outcome), first)
    reasons = tuple(dict.fromkeys(r for v in each for r in v.reasons))  # the shared ones (errors) once
    return replace(first, outcome=outcome, kind=decisive.kind, reasons=reasons, bounds=bounds)


def _judge_bound(
    values: npt.ArrayLike, lat: LatencySlo, counts: StageCounts, rule: SloRule, interrupted: bool
) -> SloVerdict:
    slo = rule.slo
    q = lat.percentile / 100
    x = samples(values)
    invalid = int(np.count_nonzero(x < 0))
    above = int(np.count_nonzero(x > lat.max_seconds))
    value = _percentile(x, lat.percentile)
    ci = quantile_ci(x, lat.percentile)
    error_rate = counts.error_rate
    fails: list[tuple[Kind, str]] = []
    open_: list[tuple[Kind, str]] = []
    name = f"p{lat.percentile:g} {lat.metric}"
    if counts.scheduled and error_rate > slo.max_error_rate:
        fails.append(("errors", f"error rate {error_rate:.1%} > {slo.max_error_rate:.1%}"))
    test = latency_test(int(x.size), above, q)
    if invalid:
        open_.append(("invalid-values", f"{invalid} {lat.metric} value(s) are negative: not latencies"))
    elif test == "fails":
        fails.append(("latency", f"{name} {_fmt(value)} > {_fmt(lat.max_seconds)}"))
    if interrupted:
        open_.insert(0, ("interrupted", "the stage was interrupted: it is not a verdict on its level"))
    if counts.scheduled == 0:
        open_.append(("no-requests", "no request was scheduled in the steady window"))
    elif counts.scheduled < rule.min_requests:
        open_.append((
            "too-few-requests",
            f"only {counts.scheduled} requests in the steady window (load.minRequestsPerStage {rule.min_requests})",
        ))  # fmt: skip
    if not invalid and test == "inconclusive" and x.size:
        if ci.available:
            open_.append((
                "uncertain",
                f"{name} {_fmt(value)} vs {_fmt(lat.max_seconds)}: the bound lies inside the "
                f"{ci.confidence:.0%} confidence interval [{_fmt(ci.low)}, {_fmt(ci.high)}]",
            ))  # fmt: skip
        else:
            open_.append((
                "insufficient-samples",
                f"insufficient samples: {name} needs ≥ {ci.min_samples} samples in the steady window to be "
                f"judged at {ci.confidence:.0%} confidence, got {ci.n}",
            ))  # fmt: skip
    elif counts.scheduled and not x.size and not fails:
        open_.append(("insufficient-samples", f"no {lat.metric} value: no successful request in the steady window"))
    if interrupted:  # requests cut off by the interruption count as errors: nothing is decided
        open_, fails = [open_[0], *fails, *open_[1:]], []
    found = fails + open_
    outcome: Outcome = "fails" if fails else "inconclusive" if open_ else "meets"
    kind: Kind = found[0][0] if found else "meets"
    return SloVerdict(outcome, kind, value, ci, error_rate, above, tuple(msg for _, msg in found))
