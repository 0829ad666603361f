"""The verify phase's contract (docs/verify.md): what a verification run is, what its load
generator reports, and the verdict on a fleet.

The analysis computes N from one replica's measured capacity; the verify phase deploys N
replicas of the recommended variant behind one Service and offers open-loop load at R. Its run is
the Benchmark's own spec with only the load replaced (``verification_spec``), so the load
generator, the SLO verdict and the records are the ones every other stage uses. The fleet is a
variant of its own (``fleet_variant``: the variant's name with ``-x<N>``) whose files live under
the run's ``verify/`` folder, apart from the records the recommendation was computed from.
"""

from __future__ import annotations

import json
import math
from typing import Final, Literal

from pydantic import Field, ValidationError

from fmbench_k8s.api.spec import BenchmarkSpec, Levels, Variant
from fmbench_k8s.contract.summary import TERMINATION_MESSAGE_BYTES, _Contract

VERIFY_FOLDER: Final = "verify"  # inside the run's folder (contract/layout.py)
COMPLETED: Final = "completed"  # the master's outcome line for a run that ran every stage

Verdict = Literal["Confirmed", "Refuted", "Inconclusive"]


def fleet_name(variant: str, instances: int) -> str:
    """The fleet's variant name: its Kubernetes objects, labels and records carry it."""
    return f"{variant}-x{instances}"


def fleet_variant(variant: Variant, instances: int) -> Variant:
    """The recommended variant as a fleet of ``instances`` replicas."""
    return variant.model_copy(update={"name": fleet_name(variant.name, instances), "replicas": instances})


def verification_rates(spec: BenchmarkSpec) -> list[float]:
    """The open-loop rates (requests/s) a verification offers: R, then R × stepAbove."""
    assert spec.verify is not None
    rate = spec.workload.requests_per_minute / 60
    step = spec.verify.step_above
    return [rate] if step is None else [rate, rate * step]


def verification_spec(spec: BenchmarkSpec, variant: str, instances: int) -> BenchmarkSpec:
    """The spec the load generator runs to verify ``instances`` of ``variant``: the fleet as the one
    variant, open-loop stages at R (and R × stepAbove) with the verify window as steady window.
    Poisson arrivals unless the run used constant ones; a trace is replaced by Poisson at its mean
    rate (the verification is about R, the trace's bursts are the day-cost's business)."""
    assert spec.verify is not None
    chosen = next(v for v in spec.variants if v.name == variant)
    rates = verification_rates(spec)
    load = spec.load.model_copy(
        update={
            "mode": "fixed" if len(rates) == 1 else "sweep",
            "arrival": "constant" if spec.load.arrival == "constant" else "poisson",
            "rate": Levels(levels=rates),
            "stage_duration": spec.verify.window,
            "max_stages": len(rates),
        }
    )
    workload = spec.workload.model_copy(update={"trace": None})
    return spec.model_copy(update={"variants": [fleet_variant(chosen, instances)], "load": load, "workload": workload})


class LevelResult(_Contract):
    """One verification stage, as the master judged it (contract/verdict.py)."""

    rate: float = Field(description="offered requests/s")
    outcome: Literal["meets", "fails", "inconclusive"]
    kind: str
    value: float | None = Field(description="the SLO percentile, seconds")
    ci_low: float | None
    ci_high: float | None
    requests: int = Field(ge=0, description="requests scheduled in the steady window")
    error_rate: float | None
    reason: str | None = None

    @classmethod
    def of(
        cls, *, rate: float, outcome: str, kind: str, value: float, ci_low: float, ci_high: float, requests: int,
        error_rate: float, reason: str | None,
    ) -> LevelResult:  # fmt: skip
        """From the master's numbers, with None for a number not measured (NaN) or unbounded (an
        interval end beyond every sample: JSON has no infinity) and a reason cut to fit a
        termination message."""

        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return cls.model_validate({
            "rate": rate, "outcome": outcome, "kind": kind, "value": num(value), "ci_low": num(ci_low),
            "ci_high": num(ci_high), "requests": requests, "error_rate": num(error_rate),
            "reason": reason[:300] if reason else None,
        })  # fmt: skip


class MasterOutcome(_Contract):
    """The master's outcome line for a completed run: ``completed`` and its last stages' verdicts
    (JSON), read by the operator from the master's termination message."""

    levels: list[LevelResult]

    def line(self) -> str:
        """``completed {json}``, dropping the earliest stages until it fits a termination message."""
        levels = list(self.levels)
        while True:
            text = f"{COMPLETED} {json.dumps(MasterOutcome(levels=levels).doc(), allow_nan=False)}"
            if len(text.encode()) < TERMINATION_MESSAGE_BYTES or not levels:
                return text
            levels = levels[1:]

    @classmethod
    def parse(cls, line: str | None) -> MasterOutcome:
        head, _, body = (line or "").strip().partition(" ")
        if head != COMPLETED:
            raise ValueError(f"the load generator did not complete: {line!r}")
        try:
            return cls.model_validate_json(body or '{"levels": []}')
        except ValidationError as err:
            raise ValueError(f"unreadable load generator outcome ({err.error_count()} errors): {line!r}") from None


def attempt_verdict(spec: BenchmarkSpec, levels: list[LevelResult]) -> tuple[Verdict, LevelResult | None]:
    """The fleet's verdict from its stage at R: Confirmed (meets with 95 % confidence), Refuted
    (fails with 95 % confidence) or Inconclusive (not decided, or no stage at R ran)."""
    rate = verification_rates(spec)[0]
    at_r = next((lv for lv in reversed(levels) if math.isclose(lv.rate, rate, rel_tol=1e-9)), None)
    if at_r is None:
        return "Inconclusive", None
    if at_r.outcome == "meets":
        return "Confirmed", at_r
    return ("Refuted" if at_r.outcome == "fails" else "Inconclusive"), at_r


def describe(spec: BenchmarkSpec, level: LevelResult) -> str:
    """``p95 e2e 1.21 s [1.10, 1.32] ≤ 2 s at 10 req/s (1,200 requests)``: the verdict's numbers."""
    lat = spec.slo.latency

    def s(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    sign = {"meets": "≤", "fails": ">"}.get(level.outcome, "vs")
    return (
        f"p{lat.percentile:g} {lat.metric} {s(level.value)} s [95% CI {s(level.ci_low)}, {s(level.ci_high)}] "
        f"{sign} {lat.max_seconds:g} s at {level.rate * 60:,.4g} req/min ({level.requests:,} requests)"
    )
