"""report.json (schemaVersion 2; its contract: fmbench_k8s/contract/report.py) from metrics and sizing.

Seconds and USD throughout; numbers that do not exist (a percentile of no samples, the cost of a
variant without a price) are null, never NaN, so the file is strict JSON.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from fmbench_k8s import __version__
from fmbench_k8s.analysis.accuracy import Accuracy
from fmbench_k8s.analysis.daycost import day_cost
from fmbench_k8s.analysis.metrics import BUCKET_LATENCY, LATENCY_METRICS, BucketMetrics, StageMetrics
from fmbench_k8s.analysis.pricing import InstancePrice, TokenPrice, VariantPrice
from fmbench_k8s.analysis.sizing import FMBENCH_RATES, Cost, Sizer, Sizing
from fmbench_k8s.api.spec import AccuracyFloor, BenchmarkSpec, Day, Variant, Workload
from fmbench_k8s.contract.engines import served_by
from fmbench_k8s.contract.stats import CONFIDENCE, QuantileCi
from fmbench_k8s.contract.summary import InstancesInterval, Recommendation, Summary, VariantSummary, cap_notes, cap_text
from fmbench_k8s.contract.verdict import Bound

SCHEMA_VERSION: Final = 2


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, numpy scalars → Python, tuples → lists, floats to 12 digits."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        # 12 significant digits: beyond any measurement here, and no 672.0000000000001 in the file
        return float(f"{value:.12g}") if math.isfinite(value) else None
    return value


def _instance_price(p: InstancePrice) -> dict[str, Any]:
    return {
        "model": "instance-hour",
        "pricePerHour": p.usd_per_hour,
        "onDemandPricePerHour": p.on_demand_usd_per_hour,
        "capacityType": p.capacity_type,
        "discount": p.discount,
        "source": p.source,
        "asOf": p.as_of,
        "region": p.region,
        "derived": p.derived,
        "notes": list(p.notes),
    }


def _token_price(p: TokenPrice) -> dict[str, Any]:
    return {
        "model": "per-token",
        "inputPer1kTokens": p.input_per_1k,
        "outputPer1kTokens": p.output_per_1k,
        "modelId": p.model_id,
        "source": p.source,
        "asOf": p.as_of,
        "region": p.region,
        "derived": p.derived,
        "notes": [],
    }


def _price_source(price: VariantPrice) -> str | None:
    if price.instance is not None:
        return price.instance.source
    return price.tokens.source if price.tokens is not None else None


def price_entry(price: VariantPrice) -> dict[str, Any]:
    if price.instance is not None:
        return _instance_price(price.instance)
    if price.tokens is not None:
        return _token_price(price.tokens)
    return {"model": "unknown", "source": None, "notes": [price.reason] if price.reason else []}


def _cost(cost: Cost | None) -> dict[str, Any] | None:
    if cost is None:
        return None
    return {
        "instances": cost.instances,
        "costPerHour": cost.cost_per_hour,
        "costPer1kRequests": cost.cost_per_1k_requests,
        "costPer1mOutputTokens": cost.cost_per_1m_output_tokens,
        "costPer1mInputTokens": cost.cost_per_1m_input_tokens,
    }


def _interval(interval: tuple[int | None, int | None] | None) -> InstancesInterval | None:
    return None if interval is None else InstancesInterval(low=interval[0], high=interval[1], confidence=CONFIDENCE)


def stage_entry(
    m: StageMetrics, at_level: Cost | None, order: Sequence[str] = (), image_order: Sequence[str] = ()
) -> dict[str, Any]:
    """A stage as report.json has it; its buckets and image sizes in ``order`` and ``image_order``
    (the spec's), others after by name."""
    return {
        "stage": m.stage,
        "target": m.target,
        "targetKind": m.target_kind,
        "windowStart": m.window_start,
        "windowEnd": m.window_end,
        "windowSeconds": m.window_s,
        "requests": m.requests,
        "ok": m.ok,
        "errors": m.errors,
        "errorsByReason": m.errors_by_reason,
        "incomplete": m.incomplete,
        "steady": {
            "requests": m.steady_requests,
            "ok": m.steady_ok,
            "errors": m.steady_errors,
            "incomplete": m.steady_incomplete,
        },
        "errorRate": m.error_rate,
        "throughputRpm": m.throughput_rpm,
        "outputTokensPerS": m.output_tokens_per_s,
        "inputTokensPerS": m.input_tokens_per_s,
        "meanPromptTokens": m.mean_prompt_tokens,
        "meanOutputTokens": m.mean_output_tokens,
        "goodputRps": m.goodput_rps,
        "sloAttainment": m.slo_attainment,
        **{k: m.latency[k].as_dict() for k in LATENCY_METRICS},
        "sloPercentile": m.slo_value,
        "sloPercentileCi": _ci(m.slo_ci),
        "meetsSlo": m.meets_slo,
        "sloOutcome": m.outcome,
        "sloVerdict": m.verdict,
        "sloFailures": list(m.failures),
        "sloBounds": _bounds(m.bounds),
        "clientBound": m.client_bound,
        "clientBoundShare": m.client_bound_share,
        "client": None
        if m.client is None
        else {
            "scheduleLagP99Seconds": m.client.schedule_lag_p99_s,
            "loopLagP99Seconds": m.client.loop_lag_p99_s,
            "cpuPercent": m.client.cpu_percent,
            "rssMb": m.client.rss_mb,
        },
        "buckets": [_bucket_stage(b) for b in sorted(m.buckets, key=lambda b: _rank(b.name, order))] or None,
        "meanImageBytes": m.mean_image_bytes,
        "imageSizes": [_bucket_stage(b) for b in sorted(m.image_sizes, key=lambda b: _rank(b.name, image_order))]
        or None,
        "atThisLevel": _cost(at_level),
        "notes": list(m.notes),
    }


def _images_entry(w: Workload) -> dict[str, Any] | None:
    if not w.has_images:
        return None
    sizes = w.images.sizes if w.images is not None else None
    return {
        "perPrompt": w.images.per_prompt if w.images is not None else None,
        "sizes": [{"name": s.name, "width": s.width, "height": s.height, "share": s.share} for s in sizes]
        if sizes
        else None,
        "datasetField": w.dataset.image_field if w.dataset is not None else None,
    }


def _day_entry(day: Day | None, sizing: Sizing, sizer: Sizer) -> dict[str, Any] | None:
    cost = day_cost(day, sizing, sizer.headroom, *sizer.tokens_at(sizing.slo_stage)) if day is not None else None
    if cost is None:
        return None
    return {
        "requestsPerDay": cost.requests,
        "tokensPerDay": cost.tokens,
        "staticInstances": cost.static_instances,
        "staticCostPerDay": cost.static_cost,
        "staticCostPer1mTokens": cost.static_per_1m_tokens,
        "autoscaledInstanceHours": cost.autoscaled_instance_hours,
        "autoscaledCostPerDay": cost.autoscaled_cost,
        "autoscaledCostPer1mTokens": cost.autoscaled_per_1m_tokens,
        "upperBound": cost.upper_bound,
    }


def _bounds(bounds: Sequence[Bound]) -> list[dict[str, Any]] | None:
    """Each latency bound's test, when the SLO has more than one."""
    if len(bounds) < 2:
        return None
    return [
        {"metric": b.metric, "percentile": b.percentile, "maxSeconds": b.max_seconds, "value": b.value,
         "ci": _ci(b.ci), "outcome": b.outcome}
        for b in bounds
    ]  # fmt: skip


def _ci(ci: QuantileCi) -> dict[str, Any]:
    return {"low": ci.low, "high": ci.high, "confidence": ci.confidence, "n": ci.n, "minSamples": ci.min_samples}


def _bucket_stage(b: BucketMetrics) -> dict[str, Any]:
    return {
        "name": b.name,
        "requests": b.steady_requests,
        "ok": b.steady_ok,
        "errorRate": b.error_rate,
        "throughputRpm": b.throughput_rpm,
        "meanPromptTokens": b.mean_prompt_tokens,
        "meanOutputTokens": b.mean_output_tokens,
        "goodputRps": b.goodput_rps,
        **{k: b.latency[k].as_dict() for k in BUCKET_LATENCY},
        "sloPercentile": b.slo_value,
        "sloPercentileCi": _ci(b.slo_ci),
        "sloOutcome": b.outcome,
        "sloFailures": list(b.failures),
        "meanImageBytes": b.mean_image_bytes,
    }


def _bucket_notes(answers: Sequence[Mapping[str, Any]] | None, slo_stage: StageMetrics | None) -> list[str]:
    """A bucket that misses the SLO where the whole traffic meets it: the mix's answer hides it."""
    if not answers or slo_stage is None:
        return []
    level = "the level" if slo_stage.target is None else f"level {slo_stage.target:g}"
    return [
        f"bucket {a['name']} does not meet the SLO at {level}, where the variant is sized "
        f"({'fails' if a['outcomeAtSloStage'] == 'fails' else 'inconclusive'}); "
        + (
            "its own requests meet it at no level that ran"
            if a["maxLevelMeetingSlo"] is None
            else f"its own requests meet it up to level {a['maxLevelMeetingSlo']:g}"
        )
        for a in answers
        if a["outcomeAtSloStage"] not in (None, "meets")
    ]


def _rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def bucket_answers(
    stages: Sequence[StageMetrics], slo_stage: StageMetrics | None, order: Sequence[str] = ()
) -> list[dict[str, Any]] | None:
    """Per bucket: the highest level its own requests meet the SLO at, below the lowest level
    they fail at (as the variant's c*), and its verdict at the level the variant is sized at."""
    names = sorted({b.name for s in stages for b in s.buckets}, key=lambda n: _rank(n, order))
    if not names:
        return None
    out = []
    for name in names:
        judged = [(s.target, b) for s in stages if s.target is not None for b in s.buckets if b.name == name]
        failing = [t for t, b in judged if b.outcome == "fails"]
        first_fail = min(failing) if failing else None
        meeting = [t for t, b in judged if b.outcome == "meets" and (first_fail is None or t < first_fail)]
        at = next((b for b in (slo_stage.buckets if slo_stage else ()) if b.name == name), None)
        out.append({
            "name": name,
            "maxLevelMeetingSlo": max(meeting) if meeting else None,
            "firstFailingLevel": first_fail,
            "outcomeAtSloStage": at.outcome if at else None,
            "sloPercentileAtSloStage": at.slo_value if at else None,
        })  # fmt: skip
    return out


def served_model(spec: BenchmarkSpec, v: Variant) -> str | None:
    """The model a variant served: the spec's model for a deployment, the endpoint's own name."""
    if v.endpoint is not None:
        return v.endpoint.model or v.endpoint.model_id or v.endpoint.endpoint_name
    model = spec.model_for(v)
    return f"{model.name}@{model.revision}" if model and model.revision else (model.name if model else None)


def variant_entry(
    v: Variant,
    sizing: Sizing,
    stages: Sequence[StageMetrics],
    sizer: Sizer,
    *,
    model: str | None,
    served: str,
    day: Day | None = None,
    floor: AccuracyFloor | None = None,
) -> dict[str, Any]:
    rpm = sizer.workload.requests_per_minute
    cost = sizing.cost
    order = [b.name for b in sizer.workload.buckets]
    image_order = [s.name for s in sizer.workload.images.sizes] if sizer.workload.images is not None else []
    buckets = bucket_answers(stages, sizing.slo_stage, order)
    return {
        "name": v.name,
        "kind": "deployment" if v.engine is not None else "endpoint",
        "model": model,
        "engine": v.engine,
        "endpointApi": v.endpoint.api if v.endpoint else None,
        "instanceType": v.instance_type,
        "replicas": v.replicas,
        "price": price_entry(sizing.price),
        "pricePerHour": sizing.price.instance.usd_per_hour if sizing.price.instance else None,
        "priceSource": _price_source(sizing.price),
        "stages": [stage_entry(s, sizer.cost_at(rpm, v, sizing.price, s), order, image_order) for s in stages],
        "meetsSlo": sizing.meets_slo,
        "maxConcurrencyMeetingSlo": sizing.max_level_meeting_slo,
        "capacityLowerBound": sizing.lower_bound,
        "firstFailingLevel": sizing.first_failing_level,
        "sloStage": sizing.slo_stage.stage if sizing.slo_stage else None,
        "throughputRpmAtSlo": sizing.throughput_rpm_at_slo,
        "throughputRpmPerInstance": sizing.throughput_rpm_per_instance,
        "latencyAtSloSeconds": sizing.latency_at_slo,
        "instancesNeeded": cost.instances if cost else None,
        "instancesInterval": i.doc() if (i := _interval(sizing.instances_interval)) else None,
        "costPerHour": cost.cost_per_hour if cost else None,
        "costPer1kRequests": cost.cost_per_1k_requests if cost else None,
        "costPer1mOutputTokens": cost.cost_per_1m_output_tokens if cost else None,
        "costPer1mInputTokens": cost.cost_per_1m_input_tokens if cost else None,
        "costPerRequest": cost.cost_per_request if cost else None,
        "reason": sizing.reason,
        "notes": [*sizing.notes, *_bucket_notes(buckets, sizing.slo_stage)],
        "buckets": buckets,
        "day": _day_entry(day, sizing, sizer),
        "accuracy": _accuracy_entry(sizing.accuracy, floor),
        "servedBy": served,
    }


def _accuracy_entry(accuracy: Accuracy | None, floor: AccuracyFloor | None) -> dict[str, Any] | None:
    if accuracy is None:
        return None

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    scores = [
        {"metric": s.metric, "mean": num(s.mean), "ciLow": num(s.ci_low), "ciHigh": num(s.ci_high), "n": s.n}
        for s in accuracy.scores.values()
    ]
    return {
        "scores": scores,
        "floorMetric": floor.metric if floor else None,
        "floorMin": floor.min if floor else None,
        "floorOutcome": accuracy.floor_outcome,
    }


def recommendation_entry(best: Sizing | None, variant: Variant | None, model: str | None) -> dict[str, Any] | None:
    if best is None or best.cost is None or variant is None:
        return None
    priced = best.price.instance.instance_type if best.price.instance and variant.engine else None
    rec = Recommendation(
        variant=best.variant,
        model=model,
        instance_type=priced or variant.instance_type,  # what ran, when a nodeSelector moved the pods
        instances=best.cost.instances,
        cost_per_hour=best.cost.cost_per_hour,
        cost_per_1k_requests=best.cost.cost_per_1k_requests,
        cost_per_1m_output_tokens=best.cost.cost_per_1m_output_tokens,
        cost_per_1m_input_tokens=best.cost.cost_per_1m_input_tokens,
        latency_seconds=best.latency_at_slo,
        max_concurrency_meeting_slo=best.max_level_meeting_slo,
        lower_bound=best.lower_bound,
        instances_interval=_interval(best.instances_interval),
        pricing="token" if best.price.kind == "token" else "instance",
    )  # fmt: skip
    return rec.doc()


def build_report(
    spec: BenchmarkSpec,
    metrics: Sequence[StageMetrics],
    sizings: Sequence[Sizing],
    best: Sizing | None,
    *,
    benchmark: str,
    run_id: str,
    generated_at: str,
    server_metrics: Mapping[str, Any],
    partial: bool,
    notes: Sequence[str],
    served: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report.json document (strict JSON types after ``clean``). ``served``: what answered each
    variant when the caller knows better than the spec (contract/engines.py: served_by)."""
    sizer = Sizer(spec.workload, spec.analysis.headroom)
    by_variant = {v.name: v for v in spec.variants}
    w, slo, pricing = spec.workload, spec.slo, spec.analysis.pricing
    variants = [
        variant_entry(
            v, s, [m for m in metrics if m.variant == v.name], sizer, model=served_model(spec, v),
            served=(served or {}).get(v.name) or served_by(v), day=spec.analysis.day,
            floor=spec.evaluation.floor if spec.evaluation else None,
        )
        for v, s in zip(spec.variants, sizings, strict=True)
    ]  # fmt: skip
    rates = (*FMBENCH_RATES, w.requests_per_minute)
    all_notes = list(notes)
    if best is None:
        all_notes.append("no variant meets the SLO with a known price: there is no recommendation")
    doc = {
        "schemaVersion": SCHEMA_VERSION,
        "benchmark": benchmark,
        "runId": run_id,
        "generatedAt": generated_at,
        "partial": partial,
        "notes": all_notes,
        "workload": {
            "requestsPerMinute": w.requests_per_minute,
            "promptTokens": dict(zip(("mean", "stddev"), w.prompt_mix(), strict=True)),
            "outputTokens": dict(zip(("mean", "stddev"), w.output_mix(), strict=True)),
            "buckets": [
                {
                    "name": b.name,
                    "minTokens": b.min_tokens,
                    "maxTokens": b.max_tokens,
                    "share": b.share,
                    "outputTokens": {"mean": (o := b.output_tokens or w.output_tokens).mean, "stddev": o.stddev},
                }
                for b in w.buckets
            ]
            or None,
            "images": _images_entry(w),
        },
        "slo": {
            "metric": slo.latency.metric,
            "percentile": slo.latency.percentile,
            "maxSeconds": slo.latency.max_seconds,
            "maxErrorRate": slo.max_error_rate,
            "additionalLatency": [
                {"metric": b.metric, "percentile": b.percentile, "maxSeconds": b.max_seconds}
                for b in slo.additional_latency
            ]
            or None,
        },
        "load": {"mode": spec.load.mode, "arrival": spec.load.arrival},
        "analysis": {
            "headroom": spec.analysis.headroom,
            "pricingSource": pricing.source,
            "region": pricing.region,
            "capacityType": pricing.capacity_type,
            "discount": pricing.discount,
            "day": None
            if spec.analysis.day is None
            else {
                "hourlyRequestsPerMinute": spec.analysis.day.hourly_requests_per_minute,
                "scaleUpDelaySeconds": spec.analysis.day.scale_up_delay_s,
                "minInstances": spec.analysis.day.min_instances,
            },
        },
        "variants": variants,
        "fmbenchView": sizer.view(spec.variants, sizings, rates),
        "recommendation": recommendation_entry(
            best,
            chosen := by_variant.get(best.variant) if best else None,
            served_model(spec, chosen) if chosen else None,
        ),
        "serverMetrics": dict(server_metrics),
        "provenance": {
            "tool": f"fmbench-k8s {__version__}",
            "python": platform.python_version(),
            "host": platform.node(),
            "platform": platform.platform(terse=True),
        },
    }
    cleaned: dict[str, Any] = clean(doc)
    return cleaned


def summary(doc: Mapping[str, Any], report_uri: str, json_uri: str) -> Summary:
    """What the CLI prints and the operator copies into status: small on purpose."""
    return Summary(
        benchmark=doc["benchmark"],
        run_id=doc["runId"],
        partial=doc["partial"],
        report_uri=report_uri,
        report_json_uri=json_uri,
        recommendation=doc["recommendation"],
        variants=[
            VariantSummary(
                name=v["name"],
                model=v["model"],
                instance_type=v["instanceType"],
                meets_slo=v["meetsSlo"],
                stages=len(v["stages"]),
                max_concurrency_meeting_slo=v["maxConcurrencyMeetingSlo"],
                capacity_lower_bound=v["capacityLowerBound"],
                throughput_rpm_at_slo=v["throughputRpmAtSlo"],
                latency_at_slo_seconds=v["latencyAtSloSeconds"],
                instances_needed=v["instancesNeeded"],
                cost_per_hour=v["costPerHour"],
                cost_per_1k_requests=v["costPer1kRequests"],
                reason=cap_text(v["reason"]),
                buckets_missing_slo=[
                    b["name"] for b in v.get("buckets") or [] if b["outcomeAtSloStage"] not in (None, "meets")
                ],
            )
            for v in doc["variants"]
        ],
        notes=cap_notes(doc["notes"]),
    )
