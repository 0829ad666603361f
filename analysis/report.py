"""report.json (schemaVersion 1, schema in analysis/data/report_schema.json) from metrics and sizing.

Seconds and USD throughout; numbers that do not exist (a percentile of no samples, the cost of a
variant without a price) are null, never NaN, so the file is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

import numpy as np

from fmbench_k8s.analysis.metrics import LATENCY_METRICS, StageMetrics
from fmbench_k8s.analysis.pricing import InstancePrice, TokenPrice, VariantPrice
from fmbench_k8s.analysis.sizing import FMBENCH_RATES, Cost, Sizer, Sizing
from fmbench_k8s.api.spec import BenchmarkSpec, Variant

SCHEMA_VERSION: Final = 1


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
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
    }


def stage_entry(m: StageMetrics, at_level: Cost | None) -> dict[str, Any]:
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
        "sloPercentileCi": {
            "low": m.slo_ci.low,
            "high": m.slo_ci.high,
            "confidence": m.slo_ci.confidence,
            "n": m.slo_ci.n,
            "minSamples": m.slo_ci.min_samples,
        },
        "meetsSlo": m.meets_slo,
        "sloVerdict": m.verdict,
        "sloFailures": list(m.failures),
        "clientBound": m.client_bound,
        "clientBoundShare": m.client_bound_share,
        "atThisLevel": _cost(at_level),
        "notes": list(m.notes),
    }


def variant_entry(v: Variant, sizing: Sizing, stages: Sequence[StageMetrics], sizer: Sizer) -> dict[str, Any]:
    rpm = sizer.workload.requests_per_minute
    cost = sizing.cost
    return {
        "name": v.name,
        "kind": "deployment" if v.engine is not None else "endpoint",
        "engine": v.engine,
        "endpointApi": v.endpoint.api if v.endpoint else None,
        "instanceType": v.instance_type,
        "replicas": v.replicas,
        "price": price_entry(sizing.price),
        "pricePerHour": sizing.price.instance.usd_per_hour if sizing.price.instance else None,
        "priceSource": _price_source(sizing.price),
        "stages": [stage_entry(s, sizer.cost_at(rpm, v, sizing.price, s)) for s in stages],
        "meetsSlo": sizing.meets_slo,
        "maxConcurrencyMeetingSlo": sizing.max_level_meeting_slo,
        "sloStage": sizing.slo_stage.stage if sizing.slo_stage else None,
        "throughputRpmAtSlo": sizing.throughput_rpm_at_slo,
        "throughputRpmPerInstance": sizing.throughput_rpm_per_instance,
        "latencyAtSloSeconds": sizing.latency_at_slo,
        "instancesNeeded": cost.instances if cost else None,
        "costPerHour": cost.cost_per_hour if cost else None,
        "costPer1kRequests": cost.cost_per_1k_requests if cost else None,
        "costPer1mOutputTokens": cost.cost_per_1m_output_tokens if cost else None,
        "costPerRequest": cost.cost_per_request if cost else None,
        "reason": sizing.reason,
        "notes": list(sizing.notes),
    }


def recommendation_entry(best: Sizing | None, variant: Variant | None) -> dict[str, Any] | None:
    if best is None or best.cost is None or variant is None:
        return None
    return {
        "variant": best.variant,
        "instanceType": variant.instance_type,
        "instances": best.cost.instances,
        "costPerHour": best.cost.cost_per_hour,
        "costPer1kRequests": best.cost.cost_per_1k_requests,
        "costPer1mOutputTokens": best.cost.cost_per_1m_output_tokens,
        "latencySeconds": best.latency_at_slo,
        "maxConcurrencyMeetingSlo": best.max_level_meeting_slo,
        "pricing": best.price.kind,
    }


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
) -> dict[str, Any]:
    """The report.json document (strict JSON types after ``clean``)."""
    sizer = Sizer(spec.workload, spec.analysis.headroom)
    by_variant = {v.name: v for v in spec.variants}
    w, slo, pricing = spec.workload, spec.slo, spec.analysis.pricing
    variants = [
        variant_entry(v, s, [m for m in metrics if m.variant == v.name], sizer)
        for v, s in zip(spec.variants, sizings, strict=True)
    ]
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
            "promptTokens": {"mean": w.prompt_tokens.mean, "stddev": w.prompt_tokens.stddev},
            "outputTokens": {"mean": w.output_tokens.mean, "stddev": w.output_tokens.stddev},
        },
        "slo": {
            "metric": slo.latency.metric,
            "percentile": slo.latency.percentile,
            "maxSeconds": slo.latency.max_seconds,
            "maxErrorRate": slo.max_error_rate,
        },
        "load": {"mode": spec.load.mode, "arrival": spec.load.arrival},
        "analysis": {
            "headroom": spec.analysis.headroom,
            "pricingSource": pricing.source,
            "region": pricing.region,
            "capacityType": pricing.capacity_type,
            "discount": pricing.discount,
        },
        "variants": variants,
        "fmbenchView": sizer.view(spec.variants, sizings, rates),
        "recommendation": recommendation_entry(best, by_variant.get(best.variant) if best else None),
        "serverMetrics": dict(server_metrics),
    }
    cleaned: dict[str, Any] = clean(doc)
    return cleaned


@cache
def report_schema() -> dict[str, Any]:
    text = resources.files("fmbench_k8s.analysis").joinpath("data/report_schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_report(doc: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if ``doc`` is not a valid report.json."""
    import jsonschema

    jsonschema.Draft202012Validator(report_schema()).validate(doc)


# The summary travels as a pod's termination message (at most 4096 bytes): texts are capped.
_TEXT_CAP: Final = 200
_NOTES_CAP: Final = 5


def _cap(text: str | None) -> str | None:
    return text if text is None or len(text) <= _TEXT_CAP else text[: _TEXT_CAP - 1] + "…"


TERMINATION_MESSAGE_BYTES: Final = 4096  # what the kubelet keeps of a termination message


def termination_summary(full: Mapping[str, Any], limit: int = TERMINATION_MESSAGE_BYTES) -> str:
    """The part of a :func:`summary` the operator reads, as JSON of at most ``limit`` bytes for any
    number of variants the spec allows: first the notes go, then the variants' reasons shrink and
    go (the full report keeps them all). Raises ValueError if even that does not fit."""
    compact = {k: full[k] for k in ("benchmark", "runId", "partial", "reportUri", "recommendation")}
    variants = [{k: v[k] for k in ("name", "stages", "maxConcurrencyMeetingSlo", "reason")} for v in full["variants"]]
    attempts = [
        {**compact, "variants": variants, "notes": full["notes"]},
        {**compact, "variants": variants},
        *(
            {**compact, "variants": [{**v, "reason": _shorten(v["reason"], cap)} for v in variants]}
            for cap in (80, 30, 0)
        ),
    ]
    for attempt in attempts:
        text = json.dumps(attempt, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= limit:
            return text
    raise ValueError(f"the analysis summary does not fit a termination message ({limit} bytes)")


def _shorten(text: str | None, cap: int) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[: cap - 1] + "…" if cap else None


def summary(doc: Mapping[str, Any], report_uri: str, json_uri: str) -> dict[str, Any]:
    """What the CLI prints and the operator copies into status: small on purpose."""
    return {
        "benchmark": doc["benchmark"],
        "runId": doc["runId"],
        "partial": doc["partial"],
        "reportUri": report_uri,
        "reportJsonUri": json_uri,
        "recommendation": doc["recommendation"],
        "variants": [
            {
                "name": v["name"],
                "instanceType": v["instanceType"],
                "meetsSlo": v["meetsSlo"],
                "stages": len(v["stages"]),
                "maxConcurrencyMeetingSlo": v["maxConcurrencyMeetingSlo"],
                "throughputRpmAtSlo": v["throughputRpmAtSlo"],
                "latencyAtSloSeconds": v["latencyAtSloSeconds"],
                "instancesNeeded": v["instancesNeeded"],
                "costPerHour": v["costPerHour"],
                "costPer1kRequests": v["costPer1kRequests"],
                "reason": _cap(v["reason"]),
            }
            for v in doc["variants"]
        ],
        "notes": [_cap(n) for n in doc["notes"][:_NOTES_CAP]],
    }
