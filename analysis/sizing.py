"""The sizing solver (DESIGN §6, docs/cost-model.md): c*, X*, N and the cost of serving R.

For an instance-priced variant:
    c*  = the highest load level whose stage meets the SLO (percentile, error budget, samples)
    X*  = steady throughput at c*, requests/min, per instance (divided by replicas)
    N   = ceil(R / (headroom × X*))
    $/h = N × price per instance-hour;  $/1k requests = $/h / (R × 60) × 1000
For a token-priced endpoint (Bedrock on-demand): $/request = P × in + G × out, $/h = $/request × R × 60,
N = 1 (there are no instances to count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from fmbench_k8s.analysis.accuracy import Accuracy
from fmbench_k8s.analysis.metrics import StageMetrics
from fmbench_k8s.analysis.pricing import VariantPrice
from fmbench_k8s.api.spec import Variant, Workload

# FMBench's heatmap rates (requests/min); the workload's own R is added.
FMBENCH_RATES: Final = (1.0, 10.0, 100.0, 1000.0, 10000.0)
# N is an integer count of something measured with noise: 3.0000000001 instances is 3.
_CEIL_SLACK: Final = 1e-9


def instances_needed(requests_per_minute: float, headroom: float, rpm_per_instance: float) -> int:
    """N = ceil(R / (headroom × X*)); at least 1."""
    if rpm_per_instance <= 0 or not math.isfinite(rpm_per_instance):
        raise ValueError(f"throughput per instance must be positive, got {rpm_per_instance}")
    return max(1, math.ceil(requests_per_minute / (headroom * rpm_per_instance) - _CEIL_SLACK))


def throughput_interval(requests: int, z: float = 1.96) -> tuple[float, float]:
    """X*'s 95 % interval as factors of the measured rate: the steady window's request count n
    is treated as a Poisson count, n ± z·√n (the normal approximation; n is ≥ 36 for any
    stage that meets a p90 SLO)."""
    if requests <= 0:
        return (0.0, math.inf)
    half = z * math.sqrt(requests)
    return (max(0.0, (requests - half) / requests), (requests + half) / requests)


@dataclass(frozen=True)
class Cost:
    """What serving R requests/min costs with one variant."""

    instances: int
    cost_per_hour: float
    cost_per_1k_requests: float
    cost_per_1m_output_tokens: float | None
    cost_per_request: float
    cost_per_1m_input_tokens: float | None = None


def _cost(cost_per_hour: float, instances: int, rpm: float, output_tokens: float, prompt_tokens: float) -> Cost:
    """Each per-token cost puts the whole cost on one kind of token (docs/cost-model.md)."""
    per_request = cost_per_hour / (rpm * 60)
    per_1m_out = per_request / output_tokens * 1e6 if output_tokens > 0 else None
    per_1m_in = per_request / prompt_tokens * 1e6 if prompt_tokens > 0 else None
    return Cost(instances, cost_per_hour, per_request * 1000, per_1m_out, per_request, per_1m_in)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Sizing:
    variant: str
    price: VariantPrice
    slo_stage: StageMetrics | None  # the stage at c*
    max_level_meeting_slo: float | None  # c*
    # c* is only a lower bound of the capacity when no higher level failed (none ran, or each was
    # inconclusive): X* is then a lower bound too, and N and the cost upper bounds.
    lower_bound: bool
    first_failing_level: float | None  # the lowest level above c* that failed: capacity is below it
    # N from the ends of X*'s 95 % interval; low is None when c* is a lower bound (N may be smaller)
    instances_interval: tuple[int | None, int | None] | None
    throughput_rpm_at_slo: float | None  # X* for all replicas
    throughput_rpm_per_instance: float | None
    latency_at_slo: float | None  # the SLO percentile at c*
    cost: Cost | None  # None: SLO not met by an instance-priced variant, or price unknown
    meets_slo: bool
    reason: str | None
    notes: tuple[str, ...] = field(default=())
    accuracy: Accuracy | None = None  # spec.evaluation's scores and floor verdict

    @property
    def recommendable(self) -> bool:
        return self.meets_slo and self.cost is not None and (self.accuracy is None or self.accuracy.meets_floor)


def with_accuracy(sizing: Sizing, accuracy: Accuracy | None) -> Sizing:
    """``sizing`` with its variant's accuracy; below an accuracy floor (or not shown above it) it
    is not recommended, and its reason says why."""
    if accuracy is None:
        return sizing
    reason = "; ".join(r for r in (sizing.reason, accuracy.reason) if r) or None
    return replace(sizing, accuracy=accuracy, reason=reason)


class Sizer:
    """Sizes variants for one workload; pure arithmetic on stage metrics and prices."""

    def __init__(self, workload: Workload, headroom: float) -> None:
        self.workload = workload
        self.headroom = headroom

    def tokens_at(self, stage: StageMetrics | None) -> tuple[float, float]:
        """Mean prompt and output tokens per request measured at ``stage`` (else the workload's)."""
        return (
            _measured(stage.mean_prompt_tokens if stage else math.nan, self.workload.prompt_mix()[0]),
            _measured(stage.mean_output_tokens if stage else math.nan, self.workload.output_mix()[0]),
        )

    def cost_at(self, rpm: float, variant: Variant, price: VariantPrice, stage: StageMetrics | None) -> Cost | None:
        """The cost of serving ``rpm`` with ``variant`` run at ``stage``'s level (None: not computable)."""
        prompt, out_tokens = self.tokens_at(stage)
        if price.kind == "token" and price.tokens is not None:
            per_request = price.tokens.per_request(prompt, out_tokens)
            return _cost(per_request * rpm * 60, 1, rpm, out_tokens, prompt)
        if price.kind != "instance" or price.instance is None or stage is None:
            return None
        per_instance = stage.throughput_rpm / variant.replicas
        if not per_instance > 0:
            return None
        n = instances_needed(rpm, self.headroom, per_instance)
        return _cost(n * price.instance.usd_per_hour, n, rpm, out_tokens, prompt)

    def size(self, variant: Variant, stages: Sequence[StageMetrics], price: VariantPrice) -> Sizing:
        rpm = self.workload.requests_per_minute
        meeting = [s for s in stages if s.outcome == "meets" and s.target is not None and s.throughput_rpm > 0]
        best = max(meeting, key=lambda s: (s.target or 0.0, s.throughput_rpm), default=None)
        notes: list[str] = []
        if best is not None and best.client_bound:
            notes.append(
                f"stage {best.stage} (level {best.target:g}) was client-bound: the load generator may have "
                "limited its throughput, so X* and the instance count are conservative"
            )
        first_fail = None
        if best is not None:
            first_fail = min(
                (
                    s.target
                    for s in stages
                    if s.outcome == "fails" and s.target is not None and s.target > (best.target or 0)
                ),
                default=None,
            )
            if first_fail is None:
                notes.append(
                    f"c* = {best.target:g} is a lower bound: no higher level failed the SLO (none ran, or each was "
                    "inconclusive), so the capacity may be higher and the instance count and cost are upper bounds"
                )
        cost = self.cost_at(rpm, variant, price, best)
        interval = None
        if cost is not None and best is not None and price.kind == "instance":
            low, high = throughput_interval(best.steady_requests)
            per_instance = best.throughput_rpm / variant.replicas
            fewest = None if first_fail is None else instances_needed(rpm, self.headroom, per_instance * high)
            most = instances_needed(rpm, self.headroom, per_instance * low) if low > 0 else None
            interval = (fewest, most)
        reason = None if best is not None else _no_level_reason(stages)
        if price.kind == "unknown":
            reason = f"{reason}; {price.reason}" if reason else price.reason
        return Sizing(
            variant=variant.name,
            price=price,
            slo_stage=best,
            max_level_meeting_slo=best.target if best else None,
            lower_bound=best is not None and first_fail is None,
            first_failing_level=first_fail,
            instances_interval=interval,
            throughput_rpm_at_slo=best.throughput_rpm if best else None,
            throughput_rpm_per_instance=best.throughput_rpm / variant.replicas if best else None,
            latency_at_slo=_finite(best.slo_value) if best else None,
            cost=cost,
            meets_slo=best is not None,
            reason=reason,
            notes=tuple(notes),
        )

    def view(self, variants: Sequence[Variant], sizings: Sequence[Sizing], rates: Iterable[float]) -> dict[str, object]:
        """FMBench's view: N and $/h for each R in ``rates`` per variant (the heatmap's data)."""
        rates = sorted(set(rates))
        rows = []
        for variant, sizing in zip(variants, sizings, strict=True):
            costs = [
                self.cost_at(r, variant, sizing.price, sizing.slo_stage) if sizing.meets_slo else None for r in rates
            ]
            rows.append({
                "variant": variant.name,
                "instances": [c.instances if c else None for c in costs],
                "costPerHour": [c.cost_per_hour if c else None for c in costs],
            })  # fmt: skip
        return {"requestsPerMinute": rates, "rows": rows}


def _measured(value: float, fallback: float) -> float:
    return value if math.isfinite(value) and value > 0 else float(fallback)


def _level(s: StageMetrics) -> str:
    return f"{s.target:g}" if s.target is not None else f"stage {s.stage}"


def _requests_needed(stage: StageMetrics) -> int:
    """minRequestsPerStage as the verdict quoted it ("… (load.minRequestsPerStage N)"), else 0."""
    for failure in stage.failures:
        if "load.minRequestsPerStage" in failure:
            return int(failure.rsplit(" ", 1)[-1].rstrip(")"))
    return 0


def _no_level_reason(stages: Sequence[StageMetrics]) -> str:
    """Why no level meets the SLO: the lowest failing level's reason, then the levels that could
    not be decided (too few samples, a bound inside the confidence interval, interrupted)."""
    if not stages:
        return "no stage ran: there are no records for this variant"
    ordered = sorted(stages, key=lambda s: (s.target if s.target is not None else 0.0, s.stage))
    failed = [s for s in ordered if s.outcome == "fails"]
    open_ = [s for s in ordered if s.outcome == "inconclusive"]
    parts = []
    if failed:
        first = failed[0]
        where = f"even at the lowest level {_level(first)}" if first is ordered[0] else f"at level {_level(first)}"
        parts.append(f"{first.failures[0] if first.failures else 'SLO not met'} {where}")
    few = [s for s in open_ if s.verdict in ("insufficient-samples", "too-few-requests")]
    other = [s for s in open_ if s not in few]
    if other:
        names = ", ".join(_level(s) for s in other)
        parts.append(f"level{'s' if len(other) > 1 else ''} {names} inconclusive ({other[0].failures[0]})")
    if few:
        # The percentile's own need, or minRequestsPerStage when that was the shortfall.
        need = max(few[0].slo_ci.min_samples, _requests_needed(few[0]))
        parts.append(
            f"level{'s' if len(few) > 1 else ''} {', '.join(_level(s) for s in few)} had too few samples "
            f"(need ≥ {need} per steady window; raise load.minRequestsPerStage or load.stageDuration)"
        )
        if len(few) == len(stages):
            return f"insufficient samples at every level: {parts[-1]}"
    return "; ".join(parts) or "no level met the SLO"


def recommend(sizings: Sequence[Sizing]) -> Sizing | None:
    """Cheapest $/hour among variants that meet the SLO and have a price; ties → fewer instances."""
    candidates = [s for s in sizings if s.recommendable]
    if not candidates:
        return None

    def key(s: Sizing) -> tuple[float, int, str]:
        assert s.cost is not None
        # equal to about a micro-dollar per hour counts as a tie
        return (round(s.cost.cost_per_hour, 6), s.cost.instances, s.variant)

    return min(candidates, key=key)
