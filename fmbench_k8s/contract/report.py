"""report.json, schemaVersion 2: the models are the contract. The JSON schema shipped beside the
report (analysis/data/report_schema.json) is generated from them (``make docs``; a unit test
keeps the committed file equal), the analysis validates every report it writes against them, and
``compare`` refuses a file that does not parse. Definitions: docs/metrics.md, docs/cost-model.md.

Seconds and USD throughout; a number that does not exist (a percentile of no samples, the cost of
a variant without a price) is null, never NaN: every number here is finite.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from fmbench_k8s.contract.summary import InstancesInterval, Recommendation

# 2: the SLO outcome, lower bounds, N's interval and the served model (1 had none of them)
SCHEMA_ID = "https://fmbench.io/schemas/report/v2.json"

NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]


class _Part(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, allow_inf_nan=False,
        protected_namespaces=(),
    )  # fmt: skip


class Latency(_Part):
    """Distribution of one latency metric over a stage's steady window (seconds)."""

    n: Count
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    std: float | None = Field(description="sample standard deviation (ddof 1); null for n < 2")


class Cost(_Part):
    """What serving the workload's R costs with this variant run at one level."""

    instances: int = Field(ge=1)
    cost_per_hour: NonNegative
    cost_per_1k_requests: NonNegative = Field(alias="costPer1kRequests")
    cost_per_1m_output_tokens: NonNegative | None = Field(alias="costPer1mOutputTokens")
    cost_per_1m_input_tokens: NonNegative | None = Field(default=None, alias="costPer1mInputTokens")


class Price(_Part):
    """Where a variant's price came from (docs/cost-model.md)."""

    model: Literal["instance-hour", "per-token", "unknown"]
    price_per_hour: NonNegative | None = None
    on_demand_price_per_hour: NonNegative | None = None
    capacity_type: Literal["on-demand", "spot", "savings-plan"] | None = None
    discount: NonNegative | None = None
    input_per_1k_tokens: NonNegative | None = Field(default=None, alias="inputPer1kTokens")
    output_per_1k_tokens: NonNegative | None = Field(default=None, alias="outputPer1kTokens")
    model_id: str | None = None
    source: str | None
    as_of: str | None = None
    region: str | None = None
    derived: bool | None = None
    notes: list[str]


class Steady(_Part):
    requests: Count
    ok: Count
    errors: Count
    incomplete: Count


class PercentileCi(_Part):
    """The distribution-free confidence interval of the SLO percentile."""

    low: float | None
    high: float | None
    confidence: float = Field(gt=0, lt=1)
    n: Count
    min_samples: int = Field(ge=1)


class Client(_Part):
    """The load workers in the stage, each figure the worst worker's (contract/records.py: ClientHealth)."""

    schedule_lag_p99_seconds: NonNegative | None
    loop_lag_p99_seconds: NonNegative | None
    cpu_percent: NonNegative | None
    rss_mb: NonNegative | None


class BoundResult(_Part):
    """One latency bound's test in a stage (with slo.additionalLatency)."""

    metric: Literal["e2e", "ttft", "tpot", "itl"]
    percentile: float = Field(gt=0, lt=100)
    max_seconds: float = Field(gt=0)
    value: float | None
    ci: PercentileCi
    outcome: Literal["meets", "fails", "inconclusive"]


class BucketStage(_Part):
    """A group of the stage's steady window (a prompt-length bucket, an image size): its requests, judged by
    the same SLO."""

    name: str
    requests: Count
    ok: Count
    error_rate: Share | None
    throughput_rpm: NonNegative | None
    mean_prompt_tokens: NonNegative | None
    mean_output_tokens: NonNegative | None
    goodput_rps: NonNegative | None
    ttft: Latency
    tpot: Latency
    e2e: Latency
    slo_percentile: float | None
    slo_percentile_ci: PercentileCi
    slo_outcome: Literal["meets", "fails", "inconclusive"]
    slo_failures: list[str]
    mean_image_bytes: NonNegative | None = Field(default=None, description="images' bytes per ok request")


class BucketAnswer(_Part):
    """A bucket's answer within the variant's runs: how far its own requests meet the SLO."""

    name: str
    max_level_meeting_slo: NonNegative | None = Field(
        description="the highest level at which this bucket's requests meet the SLO, below any failing level"
    )
    first_failing_level: NonNegative | None
    outcome_at_slo_stage: Literal["meets", "fails", "inconclusive"] | None = Field(
        description="this bucket's verdict at the stage the variant is sized at"
    )
    slo_percentile_at_slo_stage: float | None


class DayCost(_Part):
    """A day of traffic (analysis.day) served by this variant at its measured capacity."""

    requests_per_day: NonNegative
    tokens_per_day: NonNegative = Field(description="prompt and output tokens")
    static_instances: int | None = Field(ge=0, description="sized for the busiest hour; null: token-priced")
    static_cost_per_day: NonNegative
    static_cost_per_1m_tokens: NonNegative | None
    autoscaled_instance_hours: NonNegative | None
    autoscaled_cost_per_day: NonNegative
    autoscaled_cost_per_1m_tokens: NonNegative | None
    upper_bound: bool = Field(description="c* is a lower bound: instances and costs are upper bounds")


class Score(_Part):
    """One accuracy score of a variant's answers (docs/accuracy.md)."""

    metric: Literal["exactMatch", "f1", "rougeL", "cosine", "judge"]
    mean: float | None = Field(ge=0, le=1, description="null: no answer was scored")
    ci_low: float | None = Field(ge=0, le=1, description="95% interval, low end")
    ci_high: float | None = Field(ge=0, le=1, description="95% interval, high end")
    n: Count = Field(description="answers scored: ok requests with a reference")


class Accuracy(_Part):
    """spec.evaluation's scores of a variant and, with a floor, its verdict."""

    scores: list[Score]
    floor_metric: Literal["exactMatch", "f1", "rougeL", "cosine", "judge"] | None = Field(
        description="evaluation.floor; null without"
    )
    floor_min: float | None = Field(gt=0, le=1)
    floor_outcome: Literal["meets", "fails", "inconclusive"] | None = Field(
        description="meets: the interval's low end is at or above the floor; fails: its high end is below"
    )


class Stage(_Part):
    stage: Count
    target: NonNegative | None
    target_kind: Literal["concurrency", "rate"]
    window_start: float
    window_end: float
    window_seconds: float
    requests: Count
    ok: Count
    errors: Count
    errors_by_reason: dict[str, Count]
    incomplete: Count
    steady: Steady
    error_rate: Share | None
    throughput_rpm: NonNegative | None
    output_tokens_per_s: NonNegative | None
    input_tokens_per_s: NonNegative | None
    mean_prompt_tokens: NonNegative | None
    mean_output_tokens: NonNegative | None
    goodput_rps: NonNegative | None
    slo_attainment: Share | None
    ttft: Latency
    ttfo: Latency | None = Field(
        default=None, description="time to the first answer token, after any reasoning (absent in older reports)"
    )
    tpot: Latency
    itl: Latency
    e2e: Latency = Field(alias="e2e")
    ntpot: Latency
    e2e_from_scheduled: Latency = Field(alias="e2eFromScheduled")
    slo_percentile: float | None
    slo_percentile_ci: PercentileCi
    meets_slo: bool
    slo_outcome: Literal["meets", "fails", "inconclusive"] = Field(
        description="meets / fails only when the data show it at 95 % confidence (docs/metrics.md)"
    )
    slo_verdict: Literal[
        "meets", "errors", "latency", "interrupted", "invalid-values", "no-requests", "too-few-requests",
        "insufficient-samples", "uncertain",
    ]  # fmt: skip
    slo_failures: list[str]
    slo_bounds: list[BoundResult] | None = Field(
        default=None, description="each latency bound's test, slo.latency first; absent with one bound"
    )
    client_bound: bool
    client_bound_share: Share
    client: Client | None = Field(default=None, description="absent for runs written before it was recorded")
    buckets: list[BucketStage] | None = Field(default=None, description="per workload bucket; absent without buckets")
    mean_image_bytes: NonNegative | None = Field(
        default=None, description="images' encoded bytes per ok request of the steady window; absent without images"
    )
    image_sizes: list[BucketStage] | None = Field(
        default=None, description="per workload.images size, its requests of the steady window; absent without them"
    )
    at_this_level: Cost | None
    notes: list[str]


class Variant(_Part):
    name: str
    kind: Literal["deployment", "endpoint"]
    model: str | None = Field(description="the model served: spec model (name@revision) or the endpoint's")
    engine: str | None
    endpoint_api: str | None
    instance_type: str | None
    replicas: int = Field(ge=1)
    price: Price
    price_per_hour: NonNegative | None
    price_source: str | None
    stages: list[Stage]
    meets_slo: bool
    max_concurrency_meeting_slo: NonNegative | None
    capacity_lower_bound: bool = Field(description="c* is a lower bound: no higher level failed the SLO")
    first_failing_level: NonNegative | None
    slo_stage: Count | None
    throughput_rpm_at_slo: NonNegative | None
    throughput_rpm_per_instance: NonNegative | None
    latency_at_slo_seconds: NonNegative | None
    instances_needed: int | None = Field(ge=1)
    instances_interval: InstancesInterval | None
    cost_per_hour: NonNegative | None
    cost_per_1k_requests: NonNegative | None = Field(alias="costPer1kRequests")
    cost_per_1m_output_tokens: NonNegative | None = Field(alias="costPer1mOutputTokens")
    cost_per_1m_input_tokens: NonNegative | None = Field(default=None, alias="costPer1mInputTokens")
    cost_per_request: NonNegative | None
    reason: str | None
    notes: list[str]
    buckets: list[BucketAnswer] | None = Field(default=None, description="per workload bucket; absent without buckets")
    day: DayCost | None = Field(default=None, description="analysis.day's cost; absent without it or an answer")
    accuracy: Accuracy | None = Field(default=None, description="spec.evaluation's scores; absent without it")
    served_by: str | None = Field(
        default=None, description="what answered: the engine and its image, the simulator's profile, or the endpoint"
    )


class Tokens(_Part):
    mean: float
    stddev: float


class Bucket(_Part):
    name: str
    min_tokens: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    share: Share
    output_tokens: Tokens


class ImageSize(_Part):
    name: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    share: Share


class Images(_Part):
    per_prompt: int | None = Field(ge=1, description="workload.images.perPrompt; absent for a dataset's images")
    sizes: list[ImageSize] | None = Field(description="workload.images.sizes; absent for a dataset's images")
    dataset_field: str | None = Field(description="dataset.imageField, when the dataset's rows bring the images")


class Workload(_Part):
    requests_per_minute: float = Field(gt=0)
    prompt_tokens: Tokens = Field(description="the whole traffic's text; with buckets, their mix (images apart)")
    output_tokens: Tokens = Field(description="the whole traffic's; with buckets, their mix")
    buckets: list[Bucket] | None = Field(default=None, description="workload.buckets; absent without them")
    images: Images | None = Field(default=None, description="the images sent with the prompts; absent without them")


class LatencyBound(_Part):
    metric: Literal["e2e", "ttft", "tpot", "itl"]
    percentile: float = Field(gt=0, lt=100)
    max_seconds: float = Field(gt=0)


class Slo(_Part):
    metric: Literal["e2e", "ttft", "tpot", "itl"]
    percentile: float = Field(gt=0, lt=100)
    max_seconds: float = Field(gt=0)
    max_error_rate: Share
    additional_latency: list[LatencyBound] | None = Field(
        default=None, description="further bounds that hold at the same time; absent without them"
    )


class Load(_Part):
    mode: Literal["search", "sweep", "fixed"]
    arrival: Literal["closed", "poisson", "constant", "trace"]


class Day(_Part):
    hourly_requests_per_minute: list[NonNegative] = Field(min_length=24, max_length=24)
    scale_up_delay_seconds: NonNegative
    min_instances: Count


class Analysis(_Part):
    headroom: float = Field(gt=0, le=1)
    pricing_source: Literal["builtin", "aws-pricing-api"]
    region: str
    capacity_type: Literal["on-demand", "spot", "savings-plan"]
    discount: NonNegative | None
    day: Day | None = Field(default=None, description="analysis.day; absent without it")


class FmbenchRow(_Part):
    variant: str
    instances: list[Annotated[int, Field(ge=1)] | None]
    cost_per_hour: list[NonNegative | None]


class FmbenchView(_Part):
    """FMBench's heatmap: N and $/hour per variant for each request rate."""

    requests_per_minute: list[Annotated[float, Field(gt=0)]]
    rows: list[FmbenchRow]


class MetricValue(_Part):
    avg: float | None = None
    max: float | None = None
    value: float | None = None
    series: str | None = Field(default=None, description="the series read (the engine's own name for the quantity)")


class ServerStage(_Part):
    variant: str
    stage: Count
    window_start: float
    window_end: float
    metrics: dict[str, MetricValue]
    absent: list[str]


class ServerMetrics(_Part):
    """Model server metrics from Prometheus over each stage's steady window."""

    collected: bool
    url: str | None
    reason: str | None
    stages: list[ServerStage]


class Provenance(_Part):
    """Where the numbers came from: the tool that measured and analysed them, and where it ran."""

    tool: str = Field(description="fmbench-k8s and its version")
    python: str
    host: str = Field(description="the machine (or pod) that ran the analysis")
    platform: str


class Report(_Part):
    """Price/performance report of one Benchmark run."""

    schema_version: Literal[2]
    benchmark: str
    run_id: str
    generated_at: str = Field(json_schema_extra={"format": "date-time"})
    partial: bool
    notes: list[str]
    workload: Workload
    slo: Slo
    load: Load
    analysis: Analysis
    variants: list[Variant]
    fmbench_view: FmbenchView
    recommendation: Recommendation | None
    server_metrics: ServerMetrics
    provenance: Provenance | None = Field(default=None, description="absent in reports written before it existed")


def parse_report(doc: Any) -> Report:
    """``doc`` as a Report, or ValueError naming the first field that is wrong and why."""
    try:
        return Report.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        raise ValueError(f"not a valid report.json: {where}: {first['msg']}") from None


def report_schema() -> dict[str, Any]:
    """The JSON schema of report.json, generated from the models (in serialization mode)."""
    schema = _untitled(Report.model_json_schema(by_alias=True, mode="serialization"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "fmbench-k8s report.json, schemaVersion 2",
        **schema,
    }


def _untitled(node: Any) -> Any:
    """The schema without pydantic's generated titles ("Windowstart"): noise to a reader."""
    if isinstance(node, dict):
        return {k: _untitled(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_untitled(v) for v in node]
    return node


def render_schema() -> str:
    return json.dumps(report_schema(), indent=2, ensure_ascii=False) + "\n"
