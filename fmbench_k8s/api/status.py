"""The Benchmark status, written only by the operator. Small by design: per-request data lives in
storage, the status holds what `kubectl get` and Argo CD need."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fmbench_k8s.api.base import MAX_LIST, ApiModel, Name, Text

Phase = Literal["Pending", "Deploying", "Running", "Analyzing", "Verifying", "Succeeded", "Failed"]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]
TERMINAL_PHASES = ("Succeeded", "Failed")
VariantPhase = Literal["Pending", "Deploying", "Ready", "Running", "Done", "Failed"]
CONDITION_TYPES = (
    "Ready", "ModelServersReady", "LoadComplete", "Analyzed", "ReportPublished", "Recommended", "Verified",
)  # fmt: skip


class Condition(ApiModel):
    """A metav1.Condition."""

    type: Name = Field(
        description="Ready, ModelServersReady, LoadComplete, Analyzed, ReportPublished or Recommended "
        "(False: no variant met the SLO; reason LowerBound: the answer is a bound, not a measured capacity) or "
        "Verified (spec.verify: True when a fleet held R; reason MoreInstancesNeeded when that took more than N)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: Name = Field(description="CamelCase reason.")
    message: Text | None = Field(default=None, description="Human-readable detail.")
    last_transition_time: Name | None = Field(default=None, description="RFC 3339 time of the last change.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition is about.")


class VariantStatus(ApiModel):
    """Progress of one variant."""

    name: Name = Field(description="Variant name.")
    phase: VariantPhase = Field(default="Pending", description="Variant phase.")
    ready_replicas: int = Field(default=0, ge=0, description="Model server replicas Ready.")
    node_instance_types: list[Name] = Field(
        default_factory=list, max_length=MAX_LIST, description="Instance types the model server pods run on."
    )
    node_capacity_types: list[Name] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Capacity types of those nodes (karpenter.sh/capacity-type or eks.amazonaws.com/capacityType): "
        "what the analysis prices.",
    )
    stages_done: int = Field(default=0, ge=0, description="Load stages completed.")
    max_concurrency_meeting_slo: float | None = Field(
        default=None, description="c*: highest load level meeting the SLO."
    )
    capacity_lower_bound: bool | None = Field(
        default=None, description="True when c* is only a lower bound: no higher level failed the SLO."
    )
    message: Text | None = Field(default=None, description="Why the variant is where it is.")


class Recommendation(ApiModel):
    """The answer: T, N and what it costs."""

    variant: Name = Field(description="Variant to deploy.")
    model: Text | None = Field(default=None, description="The model it served (name@revision).")
    instance_type: Name | None = Field(default=None, description="T: instance type (none for token-priced APIs).")
    instances: int = Field(ge=0, description="N: instances needed for the workload under the SLO.")
    cost_per_hour: float = Field(ge=0, description="USD per hour for N instances.")
    cost_per_1k_requests: float = Field(
        alias="costPer1kRequests", ge=0, description="USD per 1,000 requests at the workload's rate."
    )
    latency_seconds: float | None = Field(default=None, ge=0, description="SLO percentile at the chosen level.")
    lower_bound: bool = Field(
        default=False,
        description="c* is a lower bound (no higher level failed): N and the cost are upper bounds.",
    )
    instances_low: int | None = Field(
        default=None, ge=1, description="Fewest instances within X*'s 95% interval (none when lowerBound)."
    )
    instances_high: int | None = Field(default=None, ge=1, description="Most instances within X*'s 95% interval.")


AttemptVerdict = Literal["Confirmed", "Refuted", "Inconclusive", "Failed"]


class VerifyAttempt(ApiModel):
    """One fleet the verify phase measured (docs/verify.md)."""

    instances: int = Field(ge=1, description="Replicas behind the Service.")
    verdict: AttemptVerdict = Field(
        description="Confirmed: the SLO percentile at R is within the bound with 95% confidence; Refuted: above "
        "it with 95% confidence; Inconclusive: neither; Failed: the fleet or its load did not run."
    )
    requests_per_minute: float | None = Field(default=None, ge=0, description="R, as offered.")
    slo_seconds: float | None = Field(default=None, ge=0, description="The SLO percentile measured at R.")
    slo_ci_low: float | None = Field(default=None, ge=0, description="Its 95% confidence interval, low end.")
    slo_ci_high: float | None = Field(default=None, ge=0, description="Its 95% confidence interval, high end.")
    requests: int | None = Field(default=None, ge=0, description="Requests in the steady window at R.")
    message: Text | None = Field(default=None, description="The verdict's numbers, or why it failed.")


class Verification(ApiModel):
    """The verify phase: the recommended N×T deployed and measured at R (docs/verify.md)."""

    variant: Name = Field(description="Variant verified.")
    instance_type: Name | None = Field(default=None, description="T.")
    computed_instances: int = Field(ge=1, description="N as the analysis computed it.")
    instances: int = Field(ge=1, description="The fleet under test now, or the last one tested.")
    verdict: Literal["Running", "Confirmed", "Refuted", "Inconclusive", "Failed"] = Field(
        description="The verdict on the computed N (Running until measured)."
    )
    verified_instances: int | None = Field(
        default=None, ge=1, description="The fewest instances confirmed to hold R (none: no fleet was confirmed)."
    )
    attempt_start_time: Name | None = Field(default=None, description="RFC 3339 time the current fleet was created.")
    load_started: bool = Field(default=False, description="The current fleet was Ready and its load started.")
    attempts: list[VerifyAttempt] = Field(default_factory=list, max_length=17, description="Fleets measured.")


class ReportRef(ApiModel):
    """Where the report is."""

    uri: Text = Field(description="report.html location (s3://... or a path).")


class BenchmarkStatus(ApiModel):
    """Observed state of a Benchmark."""

    phase: Phase = Field(
        default="Pending", description="Pending, Deploying, Running, Analyzing, Verifying, Succeeded, Failed."
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last acted on.")
    run_id: Name | None = Field(default=None, description="Identifier of this run in storage.")
    start_time: Name | None = Field(default=None, description="RFC 3339 start time.")
    completion_time: Name | None = Field(default=None, description="RFC 3339 completion time.")
    phase_start_time: Name | None = Field(default=None, description="RFC 3339 time the current phase began.")
    message: Text | None = Field(default=None, description="Summary of the current phase or of the failure.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    variants: list[VariantStatus] = Field(
        default_factory=list,
        max_length=32,
        description="Per-variant progress.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    recommendation: Recommendation | None = Field(default=None, description="Cheapest variant meeting the SLO.")
    report: ReportRef | None = Field(default=None, description="Report location.")
    verification: Verification | None = Field(default=None, description="The verify phase (spec.verify).")
