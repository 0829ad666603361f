"""The analysis entry points: ``analyze_run`` (records → report) and ``compare_reports``.

The CLI (``fmbench-k8s analyze`` / ``compare``) and the operator's analysis Job call these two and
nothing else from this package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from fmbench_k8s.analysis.accuracy import Scoring, accuracy_of, scoring_for
from fmbench_k8s.analysis.embeddings import similarity_scores
from fmbench_k8s.analysis.frames import TEXTS, UNREAD, empty_frame, read_shards, to_frame
from fmbench_k8s.analysis.judges import judge_answers
from fmbench_k8s.analysis.metrics import StageMetrics, stage_metrics
from fmbench_k8s.analysis.plots import render_plots
from fmbench_k8s.analysis.pricing import (
    PriceNotFoundError,
    PriceResolver,
    PriceTable,
    VariantPrice,
    builtin_table,
)
from fmbench_k8s.analysis.prometheus import collect_server_metrics
from fmbench_k8s.analysis.render import RENDERERS, render_html, render_markdown
from fmbench_k8s.analysis.report import SCHEMA_VERSION, build_report, summary
from fmbench_k8s.analysis.sizing import Sizer, Sizing, recommend, with_accuracy
from fmbench_k8s.api.spec import BenchmarkSpec, Judging, Pricing, Variant
from fmbench_k8s.contract.engines import engine_info
from fmbench_k8s.contract.records import StageInfo, parse_records_key, stages_key
from fmbench_k8s.contract.report import parse_report
from fmbench_k8s.contract.stats import FloatArray
from fmbench_k8s.contract.summary import Summary
from fmbench_k8s.contract.verdict import SloRule
from fmbench_k8s.storage import Storage, open_storage


def shard_groups(keys: Sequence[str]) -> list[list[str]]:
    """One variant's Parquet keys (records_key's layout) grouped by stage, so one stage at a time
    is in memory."""
    by_stage: dict[int, list[str]] = {}
    for key in keys:
        parsed = parse_records_key(key)
        if parsed is not None:
            by_stage.setdefault(parsed[1], []).append(key)
    return [by_stage[s] for s in sorted(by_stage)]


def _measure_groups(
    run: Storage,
    groups: Sequence[Sequence[str]],
    variant: str,
    *,
    infos: Sequence[StageInfo],
    rule: SloRule,
    notes: list[str],
    scoring: Scoring | None = None,
) -> list[StageMetrics]:
    """Stage metrics of each group of shards and, into ``scoring``, the answers' accuracy scores."""
    out: list[StageMetrics] = []
    skip = UNREAD if scoring is not None else UNREAD | TEXTS
    for keys in groups:
        frame = to_frame(read_shards(run, keys, skip))
        stray = frame["variant"] != variant
        if stray.any():
            notes.append(f"{int(stray.sum())} record(s) under records/{variant}/ name another variant; ignored")
            frame = frame.loc[~stray].reset_index(drop=True)
        present = set(frame["stage"].unique().tolist())
        out.extend(stage_metrics(frame, [i for i in infos if i.stage in present], rule))
        if scoring is not None:
            scoring.add(frame)
    return out


def record_keys(keys: Sequence[str], variants: Sequence[str], notes: list[str]) -> dict[str, list[str]]:
    """This run's shard keys per spec variant. Keys outside records_key's layout (another run
    nested under this one's records/, stray files) and variants not in the spec are left out,
    with a note that names them."""
    by_variant: dict[str, list[str]] = {v: [] for v in variants}
    foreign, extra = [], set()
    for key in keys:
        parsed = parse_records_key(key)
        if parsed is None:
            foreign.append(key)
        elif parsed[0] in by_variant:
            by_variant[parsed[0]].append(key)
        else:
            extra.add(parsed[0])
    if foreign:
        notes.append(
            f"{len(foreign)} object(s) under records/ are not this run's record shards and were ignored "
            f"(e.g. {foreign[0]}); a shard is records/<variant>/<stage>-<worker>-<part>.parquet"
        )
    if extra:
        notes.append(f"records of variants not in the spec were ignored: {', '.join(sorted(extra))}")
    return by_variant


def measure_run(
    run: Storage,
    spec: BenchmarkSpec,
    infos: Sequence[StageInfo],
    notes: list[str],
    scored: dict[str, Scoring] | None = None,
) -> list[StageMetrics]:
    """Stage metrics of every variant in the spec, reading one stage's shards at a time; with
    spec.evaluation, each variant's answers scored into ``scored``."""
    names = [v.name for v in spec.variants]
    rule = SloRule.of(spec)
    # one listing: on S3 it is paged, 1000 keys a request
    by_variant = record_keys(run.list_keys("records/"), names, notes)
    metrics: list[StageMetrics] = []
    for name in names:
        own = [i for i in infos if i.variant == name]
        groups = shard_groups(by_variant[name])
        scoring = scoring_for(spec.evaluation)
        found = _measure_groups(run, groups, name, infos=own, rule=rule, notes=notes, scoring=scoring)
        if len({m.stage for m in found}) < len(found):  # a stage's rows were spread over other stages' shards
            scoring = scoring_for(spec.evaluation)
            whole = [[k for g in groups for k in g]]
            found = _measure_groups(run, whole, name, infos=own, rule=rule, notes=notes, scoring=scoring)
        if scored is not None and scoring is not None:
            scored[name] = scoring
        seen = {m.stage for m in found}
        found += stage_metrics(empty_frame(), [i for i in own if i.stage not in seen], rule)
        if not found:
            notes.append(f"{name}: no records and no stages")
        metrics += sorted(found, key=lambda m: m.stage)
    return metrics


def load_stages(run: Storage, variants: Sequence[str], notes: list[str]) -> list[StageInfo]:
    infos: list[StageInfo] = []
    for v in variants:
        key = stages_key(v)
        if not run.list_keys(key):
            notes.append(f"{key} is missing: steady windows of {v} are inferred from the records")
            continue
        try:
            infos.extend(StageInfo.model_validate(s) for s in json.loads(run.read_bytes(key)))
        except ValidationError as err:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ValueError(f"{run.uri(key)} is not a valid stage list: {where}") from None
        except ValueError as err:
            raise ValueError(f"{run.uri(key)} is not a valid stage list: {err}") from None
    return infos


def _prices(
    spec: BenchmarkSpec,
    notes: list[str],
    table: PriceTable | None,
    ran_on: Mapping[str, Sequence[str]],
    bought: Mapping[str, Sequence[str]],
) -> list[VariantPrice]:
    prices = []
    for v in spec.variants:
        resolver = PriceResolver(
            _as_bought(v, spec.analysis.pricing, bought.get(v.name, ()), notes), table or builtin_table()
        )
        try:
            price = resolver.variant(v)
            price = _as_ran(v, price, resolver, ran_on.get(v.name, ()), notes)
        except PriceNotFoundError as err:
            # The latency results are still worth a report; the variant just cannot be sized.
            notes.append(f"{v.name}: {err}")
            price = VariantPrice("unknown", reason=f"cost unknown: {err}")
        if price.instance is not None:
            notes.extend(f"{v.name}: {n}" for n in price.instance.notes if "pricePerHour" not in n)
        prices.append(price)
    return prices


def _as_bought(v: Variant, pricing: Pricing, observed: Sequence[str], notes: list[str]) -> Pricing:
    """The pricing of the capacity type the variant's nodes were bought at (Karpenter's or EKS's
    node label), when that is not analysis.pricing.capacityType: what ran is what would be bought.
    Of several, on-demand (the dearest); reserved capacity is priced as on-demand."""
    if v.engine is None or not engine_info(v.engine).needs_cluster or not observed:
        return pricing
    had = "on-demand" if set(observed) != {"spot"} else "spot"
    wanted = "on-demand" if pricing.capacity_type == "savings-plan" else pricing.capacity_type
    if had == wanted:
        return pricing
    ran = ", ".join(sorted(set(observed)))
    notes.append(f"{v.name}: its nodes were {ran} capacity, not analysis.pricing.capacityType "
                 f"{pricing.capacity_type}; priced as {had}, what ran")  # fmt: skip
    return pricing.model_copy(update={"capacity_type": had, "discount": None if had == "spot" else pricing.discount})


def _as_ran(
    v: Variant, price: VariantPrice, resolver: PriceResolver, observed: Sequence[str], notes: list[str]
) -> VariantPrice:
    """The price of the instance type the variant's pods ran on, when that is not spec.instanceType
    (a nodeSelector can override it): what ran is what would be bought. Of several, the dearest."""
    # A simulator only plays its type and runs anywhere; SageMaker types (ml.*) run on the EC2 type.
    if v.engine is None or v.instance_type is None or not engine_info(v.engine).needs_cluster:
        return price
    spec_type = v.instance_type.removeprefix("ml.")
    if not set(observed) - {spec_type}:
        return price
    ran = ", ".join(sorted(set(observed)))
    if v.price_per_hour is not None:
        notes.append(f"{v.name}: its pods ran on {ran}, not spec.instanceType {v.instance_type}; "
                     "priced with the spec's pricePerHour as given")  # fmt: skip
        return price
    try:
        dearest = max((resolver.instance(t) for t in sorted(set(observed))), key=lambda p: p.usd_per_hour)
    except PriceNotFoundError as err:
        notes.append(f"{v.name}: its pods ran on {ran}, not spec.instanceType {v.instance_type}, which has no "
                     f"price ({err}); priced as spec.instanceType")  # fmt: skip
        return price
    notes.append(f"{v.name}: its pods ran on {ran}, not spec.instanceType {v.instance_type}; priced as "
                 f"{dearest.instance_type}, what ran")  # fmt: skip
    return VariantPrice("instance", instance=dearest)


def _judge(judging: Judging, scored: Mapping[str, Scoring], out: Storage, notes: list[str]) -> None:
    """The panel's verdicts on each variant's drawn answers, as its judge score (docs/accuracy.md)."""
    prompt = None
    if judging.prompt is not None:
        folder, _, name = judging.prompt.rpartition("/")
        try:
            prompt = open_storage(folder or ".").read_bytes(name).decode()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"evaluation.judging.prompt {judging.prompt}: cannot read it ({err})") from None
    panel = judge_answers(judging, {v: s.drawn[: judging.max_answers] for v, s in scored.items()}, out, prompt=prompt)
    for variant, s in scored.items():
        s.scores["judge"] = panel.votes.get(variant, [])
    notes += [*panel.notes, panel.note(judging)]


def _window(m: StageMetrics) -> StageInfo:
    """The steady window of a measured stage, as the StageInfo that queries take."""
    return StageInfo(
        variant=m.variant, stage=m.stage, start=m.window_start, steady_start=m.window_start,
        steady_end=m.window_end, end=m.window_end, workers=1,
    )  # fmt: skip


def _windows(metrics: Sequence[StageMetrics]) -> list[StageInfo]:
    return [_window(m) for m in metrics if m.window_end > m.window_start]


def _samples(metrics: Sequence[StageMetrics], sizings: Sequence[Sizing]) -> dict[str, dict[str, FloatArray]]:
    """TTFT, TPOT and E2E samples per variant at its sizing stage (else its busiest stage), for the
    histograms and CDFs; with when each was scheduled and its SLO value, for latency over time."""
    out: dict[str, dict[str, FloatArray]] = {"ttft": {}, "tpot": {}, "e2e": {}, "at": {}, "slo": {}}
    for sizing in sizings:
        own = [m for m in metrics if m.variant == sizing.variant]
        stage = sizing.slo_stage or max(own, key=lambda m: m.steady_ok, default=None)
        if stage is None or stage.steady_ok == 0:
            continue
        label = f"{stage.variant} @ {stage.target:g}" if stage.target else stage.variant
        for metric, per_variant in out.items():
            per_variant[label] = stage.samples.get(metric, np.empty(0))
    return out


def analyze_run(
    spec: BenchmarkSpec,
    run: Storage,
    *,
    benchmark: str,
    run_id: str,
    prometheus_url: str | None = None,
    partial: bool = False,
    plots: bool = True,
    output: Storage | None = None,
    notes: Sequence[str] = (),
    price_table: PriceTable | None = None,
    ran_on: Mapping[str, Sequence[str]] | None = None,
    bought: Mapping[str, Sequence[str]] | None = None,
    served: Mapping[str, str] | None = None,
) -> Summary:
    """Read records/ and stages/ from ``run``, write report.json/.html/.md, stages.csv,
    variants.csv and plots/*.png to ``output`` (default: ``run``), return the summary.

    ``prometheus_url`` defaults to spec.prometheus.url; Prometheus trouble never fails the analysis.
    ``notes`` (from the caller, e.g. the local runner) open the report's notes.
    ``price_table`` replaces the shipped one (``--price-table``).
    ``ran_on``: per variant, the instance types its model server pods ran on (the operator's
    ``status.variants[].nodeInstanceTypes``); a type other than spec.instanceType is what is priced.
    ``bought``: per variant, the capacity types of those nodes (``nodeCapacityTypes``); one other
    than analysis.pricing.capacityType is what is priced.
    ``served``: what answered a variant, where the caller knows better than the spec (a local
    engine).
    Raises AccountingError when the records do not add up.
    """
    out = output or run
    notes = list(notes)
    if partial:
        notes.append("the run did not finish: this report covers the stages that ran")
    names = [v.name for v in spec.variants]
    prices = _prices(spec, notes, price_table, ran_on or {}, bought or {})
    infos = load_stages(run, names, notes)
    scored: dict[str, Scoring] = {}
    metrics = measure_run(run, spec, infos, notes, scored)
    ev = spec.evaluation
    if ev is not None and ev.judging is not None:
        _judge(ev.judging, scored, out, notes)
    if ev is not None and ev.embedding is not None:
        similar = similarity_scores(ev.embedding, {v: s.drawn[: ev.embedding.max_answers] for v, s in scored.items()})
        for variant, s in scored.items():
            s.scores["cosine"] = similar.scores.get(variant, [])
        notes += similar.notes
    accuracy = {v: accuracy_of(v, s.scores, ev.floor) for v, s in scored.items()} if ev is not None else {}

    sizer = Sizer(spec.workload, spec.analysis.headroom)
    sizings = [
        with_accuracy(sizer.size(v, [m for m in metrics if m.variant == v.name], p), accuracy.get(v.name))
        for v, p in zip(spec.variants, prices, strict=True)
    ]
    best = recommend(sizings)
    url = prometheus_url or (spec.prometheus.url if spec.prometheus else None)
    server = collect_server_metrics(url, _windows(metrics), benchmark=benchmark)
    if not server["collected"]:
        notes.append(server["reason"])
    if any(m.client_bound for m in metrics):
        notes.append("some stages were client-bound (load generator saturated); see each stage's clientBound flag")

    doc = build_report(
        spec, metrics, sizings, best,
        benchmark=benchmark, run_id=run_id, generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        server_metrics=server, partial=partial, notes=notes, served=served,
    )  # fmt: skip
    try:
        parse_report(doc)
    except ValueError as err:  # a bug of ours: say so, but keep the results
        doc["notes"].append(f"report.json does not match its contract: {err}")

    json_uri = out.write_bytes("report.json", json.dumps(doc, indent=1).encode())
    images = render_plots(doc, _samples(metrics, sizings)) if plots else {}
    for name, png in images.items():
        out.write_bytes(f"plots/{name}", png)
    html_uri = out.write_bytes("report.html", render_html(doc, images).encode())
    out.write_bytes("report.md", render_markdown(doc, list(images)).encode())
    for name, render in RENDERERS.items():
        out.write_bytes(name, render(doc).encode())
    return summary(doc, html_uri, json_uri)


# ---- compare --------------------------------------------------------------------------------


def load_report(storage: Storage, key: str = "report.json") -> dict[str, Any]:
    """A report.json from storage (for ``fmbench-k8s compare``)."""
    doc: dict[str, Any] = json.loads(storage.read_bytes(key))
    if doc.get("schemaVersion") != SCHEMA_VERSION:
        raise ValueError(
            f"{storage.uri(key)}: report schemaVersion {doc.get('schemaVersion')!r}, this version reads "
            f"{SCHEMA_VERSION}; run `fmbench-k8s analyze` on that run's records to write it anew"
        )
    try:
        parse_report(doc)
    except ValueError as err:
        raise ValueError(f"{storage.uri(key)}: {err}") from None
    return doc


__all__ = ["analyze_run", "load_report"]
