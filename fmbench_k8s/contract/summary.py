"""The analysis summary: what ``fmbench-k8s analyze`` prints, the local runner shows and writes to
summary.json, and the analysis Job hands the operator as its termination message.

The analysis builds it (analysis/report.py); every reader parses it through these models, so a
field renamed on one side fails a test instead of reading as missing.
"""

from __future__ import annotations

import json
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

TERMINATION_MESSAGE_BYTES: Final = 4096  # what the kubelet keeps of a termination message
_TEXT_CAP: Final = 200  # a reason or note in the summary; report.json keeps them whole
_NOTES_CAP: Final = 5


class _Contract(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, protected_namespaces=()
    )

    def doc(self) -> dict[str, object]:
        """The JSON form (camelCase keys)."""
        return self.model_dump(mode="json", by_alias=True)


class InstancesInterval(_Contract):
    """N at the two ends of X*'s confidence interval; ``low`` is None when c* is a lower bound."""

    low: int | None = Field(ge=1)
    high: int | None = Field(ge=1)
    confidence: float = Field(gt=0, lt=1)


class Recommendation(_Contract):
    """The answer: T, N and what it costs (docs/cost-model.md)."""

    variant: str
    model: str | None  # the model served (report.py: served_model)
    instance_type: str | None
    instances: int = Field(ge=1)
    cost_per_hour: float = Field(ge=0)
    cost_per_1k_requests: float = Field(ge=0, alias="costPer1kRequests")
    cost_per_1m_output_tokens: float | None = Field(ge=0, alias="costPer1mOutputTokens")
    cost_per_1m_input_tokens: float | None = Field(default=None, ge=0, alias="costPer1mInputTokens")
    latency_seconds: float | None = Field(ge=0)
    max_concurrency_meeting_slo: float | None = Field(ge=0)
    lower_bound: bool  # c* is a lower bound: N and the cost are upper bounds
    instances_interval: InstancesInterval | None
    pricing: Literal["instance", "token"]

    def status(self) -> dict[str, object]:
        """``status.recommendation`` of the Benchmark (api/status.py), without empty fields."""
        interval = self.instances_interval
        fields = {
            "variant": self.variant, "model": self.model, "instanceType": self.instance_type,
            "instances": self.instances, "costPerHour": self.cost_per_hour,
            "costPer1kRequests": self.cost_per_1k_requests, "latencySeconds": self.latency_seconds,
            "lowerBound": self.lower_bound, "instancesLow": interval.low if interval else None,
            "instancesHigh": interval.high if interval else None,
        }  # fmt: skip
        return {k: v for k, v in fields.items() if v is not None}

    def headline(self) -> str:
        """One line: variant, T × N, $/hour, $/1k requests, and whether N is a bound."""
        at_most = "at most " if self.lower_bound else ""
        line = (
            f"{self.variant} on {self.instance_type or 'a token-priced API'} × {at_most}{self.instances}  "
            f"{at_most}${self.cost_per_hour:.2f}/hour  ${self.cost_per_1k_requests:.4f} per 1k requests"
        )
        if self.lower_bound:
            line += " (c* is a lower bound: no higher level failed the SLO)"
        return line


class VariantSummary(_Contract):
    name: str
    model: str | None
    instance_type: str | None
    meets_slo: bool
    stages: int = Field(ge=0)
    max_concurrency_meeting_slo: float | None
    capacity_lower_bound: bool
    throughput_rpm_at_slo: float | None
    latency_at_slo_seconds: float | None
    instances_needed: int | None
    cost_per_hour: float | None
    cost_per_1k_requests: float | None = Field(alias="costPer1kRequests")
    reason: str | None
    buckets_missing_slo: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="workload buckets whose own requests miss the SLO at the level the variant is sized at",
    )


class Summary(_Contract):
    benchmark: str
    run_id: str
    partial: bool
    report_uri: str
    report_json_uri: str
    recommendation: Recommendation | None
    variants: list[VariantSummary]
    notes: list[str]

    def termination_message(self, limit: int = TERMINATION_MESSAGE_BYTES) -> str:
        """The part the operator reads, as JSON of at most ``limit`` bytes for any number of
        variants the spec allows: first the notes go, then the variants' reasons shrink and go
        (the full report keeps them all). Raises ValueError if even that does not fit."""
        variants = [
            StatusVariant(
                name=v.name, stages=v.stages, max_concurrency_meeting_slo=v.max_concurrency_meeting_slo,
                capacity_lower_bound=v.capacity_lower_bound, reason=v.reason,
                buckets_missing_slo=v.buckets_missing_slo,
            )
            for v in self.variants
        ]  # fmt: skip
        base = OperatorSummary(
            benchmark=self.benchmark, run_id=self.run_id, partial=self.partial, report_uri=self.report_uri,
            recommendation=self.recommendation, variants=variants, notes=self.notes,
        )  # fmt: skip
        attempts = [
            base,
            base.model_copy(update={"notes": []}),
            *(
                base.model_copy(
                    update={
                        "notes": [],
                        "variants": [v.model_copy(update={"reason": _cut(v.reason, cap)}) for v in variants],
                    }
                )
                for cap in (80, 30, 0)
            ),
        ]
        for attempt in attempts:
            doc = attempt.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
            if len(text.encode()) <= limit:
                return text
        raise ValueError(f"the analysis summary does not fit a termination message ({limit} bytes)")


class StatusVariant(_Contract):
    name: str
    stages: int = Field(ge=0)
    max_concurrency_meeting_slo: float | None = None
    capacity_lower_bound: bool = False
    reason: str | None = None
    buckets_missing_slo: list[str] = Field(default_factory=list)


class OperatorSummary(_Contract):
    """What the analysis Job's termination message carries to the operator."""

    benchmark: str
    run_id: str
    partial: bool
    report_uri: str
    recommendation: Recommendation | None
    variants: list[StatusVariant]
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def parse(cls, message: str) -> OperatorSummary:
        """The termination message, or ValueError naming what is wrong with it."""
        try:
            data = json.loads(message)
        except ValueError as err:
            raise ValueError(f"analysis summary is not JSON ({err}); first bytes: {message[:80]!r}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the message"
            raise ValueError(
                f"analysis summary is not valid: {where}: {first['msg']}; first bytes: {message[:80]!r}"
            ) from None


def cap_text(text: str | None, cap: int = _TEXT_CAP) -> str | None:
    return _cut(text, cap)


def cap_notes(notes: list[str]) -> list[str]:
    return [n for n in (cap_text(n) for n in notes[:_NOTES_CAP]) if n is not None]


def _cut(text: str | None, cap: int) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[: cap - 1] + "…" if cap else None
