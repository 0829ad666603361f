"""report.json → report.html (self-contained), report.md and CSVs.

Everything is rendered from the JSON document alone, so an old report.json can be re-rendered.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fmbench_k8s.analysis.metrics import LATENCY_METRICS
from fmbench_k8s.analysis.plots import PLOTS

Doc = Mapping[str, Any]
PCTS = ("p50", "p90", "p95", "p99", "mean", "std")


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def usd(value: Any) -> str:
    return "—" if value is None else f"${value:,.4g}"


def pct(value: Any) -> str:
    return "—" if value is None else f"{value:.2%}"


def headline(doc: Doc) -> str:
    rec = doc["recommendation"]
    if rec is None:
        return "No variant meets the SLO with a known price; see each variant's reason."
    slo = doc["slo"]
    bound = "at most " if rec["lowerBound"] else ""
    what = f"{bound}{rec['instances']} × {rec['instanceType']}" if rec["instanceType"] else "the endpoint"
    latency = rec["latencySeconds"]
    at = f", p{slo['percentile']:g} {slo['metric']} {latency:.3g} s" if latency is not None else ""
    why = (
        " The capacity was not bracketed (no higher level failed the SLO): the instance count and cost are "
        "upper bounds."
        if rec["lowerBound"]
        else ""
    )
    return (
        f"Deploy {what} (variant {rec['variant']}): {bound}{usd(rec['costPerHour'])}/hour, "
        f"{usd(rec['costPer1kRequests'])} per 1k requests{at}.{why}"
    )


def _variant_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = [
        "variant", "instance type", "price/h", "price source", "meets SLO", "c*", "X* req/min",
        "N", "$/hour", "$/1k req", "$/1M in tok", "$/1M out tok", "reason",
    ]  # fmt: skip
    rows = []
    for v in doc["variants"]:
        price = v["price"]
        if price["model"] == "per-token":
            shown = f"${price['inputPer1kTokens']:.4g}/${price['outputPer1kTokens']:.4g} per 1k in/out"
        else:
            shown = usd(v["pricePerHour"])
        source = price["source"] or "—"
        if price.get("derived"):
            source += " (derived)"
        low, high = ("≥", "≤") if v["capacityLowerBound"] else ("", "")
        c_star, n = v["maxConcurrencyMeetingSlo"], v["instancesNeeded"]
        rows.append([
            v["name"], v["instanceType"] or v["endpointApi"] or "—", shown, source, fmt(v["meetsSlo"]),
            low + fmt(c_star) if c_star is not None else fmt(c_star), fmt(v["throughputRpmAtSlo"]),
            high + fmt(n) if n is not None else fmt(n),
            usd(v["costPerHour"]), usd(v["costPer1kRequests"]), usd(v.get("costPer1mInputTokens")),
            usd(v["costPer1mOutputTokens"]), v["reason"] or "",
        ])  # fmt: skip
    return head, rows


def _target_unit(v: Doc) -> str:
    """A stage's load level: concurrent users (closed loop) or requests per second (open loop)."""
    kinds = {s["targetKind"] for s in v["stages"]}
    return "req/s" if kinds == {"rate"} else "users"


def _stage_rows(doc: Doc, v: Doc) -> tuple[list[str], list[list[str]]]:
    slo = doc["slo"]
    q = f"p{slo['percentile']:g} {slo['metric']}"
    head = [
        "stage", f"target ({_target_unit(v)})", "requests (steady)", "ok", "errors", "incomplete", "error rate",
        "req/min (steady)", "out tok/s", "TTFT p50/p95 (s)", "TPOT p50/p95 (s)", "ITL p95 (s)",
        "E2E p50/p95/p99 (s)", f"{q} (s) [95% CI]", "verdict",
    ]  # fmt: skip
    extra = bool(slo.get("additionalLatency"))
    if extra:
        head.insert(-1, "other bounds (s)")
    rows = []
    for s in v["stages"]:
        ci = s["sloPercentileCi"]
        ci_text = (
            f"[{fmt(ci['low'])}, {fmt(ci['high'])}]" if ci["low"] is not None else f"(n={ci['n']} < {ci['minSamples']})"
        )
        verdict = s["sloVerdict"] + (" (client-bound)" if s["clientBound"] else "")
        ttft = f"{fmt(s['ttft']['p50'])} / {fmt(s['ttft']['p95'])}"
        if _thinks(s):  # a reasoning model: its first answer token comes later than its first token
            ttft += f" (answer {fmt(s['ttfo']['p50'])} / {fmt(s['ttfo']['p95'])})"
        rows.append([
            fmt(s["stage"]), fmt(s["target"]), f"{fmt(s['requests'])} ({fmt(s['steady']['requests'])})",
            fmt(s["ok"]), fmt(s["errors"]),
            fmt(s["incomplete"]), pct(s["errorRate"]), fmt(s["throughputRpm"]), fmt(s["outputTokensPerS"]),
            ttft, f"{fmt(s['tpot']['p50'])} / {fmt(s['tpot']['p95'])}",
            fmt(s["itl"]["p95"]), f"{fmt(s['e2e']['p50'])} / {fmt(s['e2e']['p95'])} / {fmt(s['e2e']['p99'])}",
            f"{fmt(s['sloPercentile'])} {ci_text}", *([_other_bounds(s)] if extra else []), verdict,
        ])  # fmt: skip
    return head, rows


def slo_text(slo: Doc) -> str:
    """Every latency bound of the SLO: "p95 e2e ≤ 10 s and p95 ttft ≤ 0.5 s"."""
    bounds = [slo, *(slo.get("additionalLatency") or [])]
    return " and ".join(f"p{b['percentile']:g} {b['metric']} ≤ {b['maxSeconds']:g} s" for b in bounds)


def _other_bounds(stage: Doc) -> str:
    """The further bounds' tests of a stage: "p95 ttft 0.41 s meets; p90 tpot 0.06 s fails"."""
    return "; ".join(
        f"p{b['percentile']:g} {b['metric']} {fmt(b['value'])} {b['outcome']}"
        for b in (stage.get("sloBounds") or [])[1:]
    )


def _bucket_answer_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """Per variant and prompt-length bucket: how far its own requests meet the SLO."""
    spec = {b["name"]: b for b in doc["workload"].get("buckets") or []}
    q = f"p{doc['slo']['percentile']:g} {doc['slo']['metric']}"
    head = ["variant", "bucket", "prompt tokens", "share", "output tokens", "meets the SLO up to level",
            "first failing level", f"at the sizing level: {q} (s)", "verdict there"]  # fmt: skip
    rows = []
    for v in doc["variants"]:
        for a in v.get("buckets") or []:
            b = spec.get(a["name"], {})
            tokens = f"{b['minTokens']}–{b['maxTokens']}" if b else "—"
            rows.append([
                v["name"], a["name"], tokens, pct(b.get("share")), fmt(b["outputTokens"]["mean"]) if b else "—",
                fmt(a["maxLevelMeetingSlo"]), fmt(a["firstFailingLevel"]), fmt(a["sloPercentileAtSloStage"]),
                a["outcomeAtSloStage"] or "—",
            ])  # fmt: skip
    return head, rows


def _group_stage_rows(doc: Doc, key: str = "buckets") -> tuple[list[str], list[list[str]]]:
    """Every stage's steady window, split by prompt-length bucket (``buckets``) or image size
    (``imageSizes``, with the images' bytes)."""
    q = f"p{doc['slo']['percentile']:g} {doc['slo']['metric']}"
    images = key == "imageSizes"
    head = ["variant", "stage", "target", "image size" if images else "bucket", "requests", "error rate", "req/min",
            *(["image KB/request"] if images else []), "mean prompt tok", "TTFT p50/p95 (s)", "E2E p50/p95 (s)",
            f"{q} (s) [95% CI]", "verdict"]  # fmt: skip
    rows = []
    for v in doc["variants"]:
        for s in v["stages"]:
            for b in s.get(key) or []:
                ci = b["sloPercentileCi"]
                ci_text = f"[{fmt(ci['low'])}, {fmt(ci['high'])}]" if ci["low"] is not None else f"(n={ci['n']})"
                kb = b.get("meanImageBytes")
                rows.append([
                    v["name"], fmt(s["stage"]), fmt(s["target"]), b["name"], fmt(b["requests"]), pct(b["errorRate"]),
                    fmt(b["throughputRpm"]), *([fmt(kb / 1000 if kb is not None else None)] if images else []),
                    fmt(b["meanPromptTokens"]), f"{fmt(b['ttft']['p50'])} / {fmt(b['ttft']['p95'])}",
                    f"{fmt(b['e2e']['p50'])} / {fmt(b['e2e']['p95'])}", f"{fmt(b['sloPercentile'])} {ci_text}",
                    b["sloOutcome"],
                ])  # fmt: skip
    return head, rows


def _images_text(w: Doc) -> str:
    """What the prompts carried, in the report's words."""
    images = w["images"]
    if images["sizes"]:
        sizes = ", ".join(f"{s['name']} {s['width']}×{s['height']} ({pct(s['share'])})" for s in images["sizes"])
        return f"Each prompt carried {images['perPrompt']} synthetic PNG image(s) of one size: {sizes}. " + IMAGES_TEXT
    return f"Each prompt carried its dataset row's images (field {images['datasetField']}). " + IMAGES_TEXT


def _in_buckets(w: Doc) -> str:
    buckets = w.get("buckets") or []
    return f" in {len(buckets)} buckets ({', '.join(b['name'] for b in buckets)})" if buckets else ""


IMAGES_TEXT = (
    "The server's prompt tokens include the images' tokens, so the mean prompt tokens per size show what an image "
    "costs; each size's rows are its requests within the whole mix, judged by the same SLO."
)
BUCKETS_TEXT = (
    "Each stage's load is the whole mix; a bucket's rows are its requests within it, judged by the same SLO. The "
    "recommendation sizes the whole traffic; a bucket that misses the SLO at the sizing level is named in the notes."
)


def _thinks(stage: Doc) -> bool:
    """The stage's first answer tokens came later than its first tokens (reasoning)."""
    ttfo, ttft = stage.get("ttfo") or {}, stage["ttft"]
    return ttfo.get("p50") is not None and ttft.get("p50") is not None and ttfo["p50"] > ttft["p50"] + 1e-9


def _day_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """The day of traffic (analysis.day) per variant: a fleet for the peak against an autoscaled one."""
    head = ["variant", "requests/day", "static N", "static $/day", "static $/1M tok", "autoscaled instance-h",
            "autoscaled $/day", "autoscaled $/1M tok", "saved by autoscaling"]  # fmt: skip
    rows = []
    for v in doc["variants"]:
        d = v.get("day")
        if d is None:
            continue
        bound = "≤" if d["upperBound"] else ""
        saved = 1 - d["autoscaledCostPerDay"] / d["staticCostPerDay"] if d["staticCostPerDay"] > 0 else None
        static = "— (per token)" if d["staticInstances"] is None else bound + fmt(d["staticInstances"])
        rows.append([
            v["name"], fmt(round(d["requestsPerDay"])), static, bound + usd(d["staticCostPerDay"]),
            bound + usd(d["staticCostPer1mTokens"]), fmt(d["autoscaledInstanceHours"]),
            bound + usd(d["autoscaledCostPerDay"]), bound + usd(d["autoscaledCostPer1mTokens"]), pct(saved),
        ])  # fmt: skip
    return head, rows


def _accuracy_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """Cost against accuracy (spec.evaluation): each variant's $/1k requests next to its scores."""
    scored = [v for v in doc["variants"] if v.get("accuracy")]
    metrics = [s["metric"] for s in scored[0]["accuracy"]["scores"]] if scored else []
    head = ["variant", "$/1k req", *metrics, "answers", "floor"]
    rows = []
    for v in scored:
        acc = v["accuracy"]
        cells = [
            "—" if s["mean"] is None else f"{s['mean']:.3f} [{s['ciLow']:.3f}, {s['ciHigh']:.3f}]"
            for s in acc["scores"]
        ]
        floor = (
            "—"
            if acc["floorOutcome"] is None
            else f"{acc['floorOutcome']} ({acc['floorMetric']} ≥ {acc['floorMin']:g})"
        )
        n = max((s["n"] for s in acc["scores"]), default=0)
        bound = "≤" if v["capacityLowerBound"] and v["costPer1kRequests"] is not None else ""
        rows.append([v["name"], bound + usd(v["costPer1kRequests"]), *cells, fmt(n), floor])
    return head, rows


ACCURACY_TEXT = (
    "Means over the answers scored (ok requests with a reference), with 95% intervals; a variant is recommended "
    "only if it meets the floor (docs/accuracy.md)."
)


def day_text(doc: Doc) -> str:
    day = doc["analysis"]["day"]
    return (
        f"R by hour (req/min, from 00:00): {', '.join(f'{r:g}' for r in day['hourlyRequestsPerMinute'])}. Static: "
        "the busiest hour's N all day. Autoscaled: each hour's N (at least "
        f"{day['minInstances']}), a new instance paid from {day['scaleUpDelaySeconds'] / 60:g} min before its hour. "
        'Capacity per instance as measured at c* (docs/cost-model.md, "A day of traffic").'
    )


def _view_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    view = doc["fmbenchView"]
    head = ["variant"] + [f"R={r:g}" for r in view["requestsPerMinute"]]
    rows = [
        [row["variant"]]
        + [
            f"{n} / {usd(c)}" if n is not None else "—"
            for n, c in zip(row["instances"], row["costPerHour"], strict=True)
        ]
        for row in view["rows"]
    ]
    return head, rows


def _error_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """Failed requests by reason, per stage that had any (reasons: docs/metrics.md)."""
    rows = [
        [v["name"], fmt(s["stage"]), fmt(s["target"]), reason, fmt(count), pct(count / s["requests"])]
        for v in doc["variants"]
        for s in v["stages"]
        for reason, count in sorted(s["errorsByReason"].items(), key=lambda kv: -kv[1])
        if count and s["requests"]
    ]
    return ["variant", "stage", "target", "reason", "requests", "share of the stage"], rows


def _server_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    sm = doc["serverMetrics"]
    names = sorted({k for st in sm["stages"] for k in st["metrics"]} | {k for st in sm["stages"] for k in st["absent"]})
    head = ["variant", "stage", *names]
    rows = []
    for st in sm["stages"]:
        cells = []
        for name in names:
            m = st["metrics"].get(name)
            if m is None:
                cells.append("absent")
            elif m.get("value") is not None:
                cells.append(fmt(m["value"]))
            else:
                cells.append(f"{fmt(m['avg'], 3)} / {fmt(m['max'], 3)}")
        rows.append([st["variant"], fmt(st["stage"]), *cells])
    return head, rows


CLIENT_HEALTH = (
    "A stage is client-bound when a load worker's event loop lagged (p99 > 50 ms) or its CPU passed 90 %: "
    'its latencies then include the client\'s own delay (docs/loadgen.md, "Client self-checks").'
)


def _client_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """Per stage, whether the load generator kept up: its figures are the worst worker's."""
    head = ["variant", "stage", "target", "workers' verdict", "requests sent client-bound",
            "schedule lag p99 (s)", "loop lag p99 (s)", "CPU (%)", "RSS (MB)"]  # fmt: skip
    rows = []
    for v in doc["variants"]:
        for s in v["stages"]:
            c = s.get("client") or {}
            rows.append([
                v["name"], fmt(s["stage"]), fmt(s["target"]),
                "client-bound: add workers" if s["clientBound"] else "kept up",
                f"{100 * s['clientBoundShare']:.1f} %",
                *(fmt(c.get(k), 3) if c.get(k) is not None else "not recorded"
                  for k in ("scheduleLagP99Seconds", "loopLagP99Seconds", "cpuPercent", "rssMb")),
            ])  # fmt: skip
    return head, rows


def server_series(doc: Doc) -> list[str]:
    """Per variant, the engine series its server metrics were read from (one key, each engine's name)."""
    read: dict[str, set[str]] = {}
    for st in doc["serverMetrics"]["stages"]:
        names = {
            m["series"] for m in st["metrics"].values() if m.get("series") and not m["series"].startswith("fmbench")
        }
        read.setdefault(st["variant"], set()).update(names)
    return [f"{v}: {', '.join(sorted(names)) or 'none'}" for v, names in read.items()]


# ---- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.answer{background:#eef8ee;border:1px solid #7c7;padding:.8em 1em;font-size:1.1em;border-radius:6px}
.none{background:#fbeeee;border-color:#c77}.partial{background:#fff4d6;border:1px solid #e0b000;padding:.5em 1em}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.muted{color:#777;font-size:.85em}
"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def provenance(doc: Doc) -> list[str]:
    """Where the numbers came from: what served each variant, and what measured and analysed them."""
    lines = [
        f"{v['name']}: {v.get('servedBy') or 'not recorded'}; model {v['model'] or 'unknown'}" for v in doc["variants"]
    ]
    p = doc.get("provenance")
    if p:
        lines.append(f"analysed by {p['tool']} (Python {p['python']}) on {p['host']} ({p['platform']})")
    else:
        lines.append("analysed by a version of fmbench-k8s that did not record itself")
    return lines


def render_html(doc: Doc, plots: Mapping[str, bytes]) -> str:
    """One file: CSS inline, every plot an inline base64 PNG."""
    e = html.escape
    w, slo = doc["workload"], doc["slo"]

    def img(name: str) -> str:
        if name not in plots:
            return ""
        data = base64.b64encode(plots[name]).decode()
        return f'<h3>{e(PLOTS.get(name, name))}</h3><img alt="{e(name)}" src="data:image/png;base64,{data}">'

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>fmbench-k8s report: {e(doc['benchmark'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(doc['benchmark'])} <span class='muted'>run {e(doc['runId'])}, {e(doc['generatedAt'])}</span></h1>",
    ]
    if doc["partial"]:
        parts.append("<p class='partial'>Partial report: the run did not finish; some stages may be missing.</p>")
    css = "answer" + ("" if doc["recommendation"] else " none")
    parts.append(f"<p class='{css}'>{e(headline(doc))}</p>")
    parts.append(
        f"<p>Workload: R = {w['requestsPerMinute']:g} requests/min, prompts ≈ {fmt(w['promptTokens']['mean'])} "
        f"tokens{_in_buckets(w)}, outputs ≈ {fmt(w['outputTokens']['mean'])} tokens. "
        f"SLO: {e(slo_text(slo))}, error rate ≤ {slo['maxErrorRate']:.2%}. Headroom {doc['analysis']['headroom']:g}, "
        f"{e(doc['analysis']['capacityType'])} prices in {e(doc['analysis']['region'])}.</p>"
    )
    parts += ["<h2>Variants</h2>", _html_table(*_variant_rows(doc)), img("business_summary.png")]
    parts.append("<h2>Stages</h2>")
    for v in doc["variants"]:
        parts += [f"<h3>{e(v['name'])}</h3>", _html_table(*_stage_rows(doc, v))]
        parts += [f"<p class='muted'>{e(n)}</p>" for n in v["notes"]]
    parts.append("<h2>Load, latency and throughput</h2>")
    parts += [img(n) for n in ("latency_vs_throughput.png", "latency_vs_load.png", "throughput_vs_load.png",
                               "latency_cdf.png", "latency_over_time.png", "ttft_distribution.png",
                               "tpot_distribution.png")]  # fmt: skip
    if w.get("buckets"):
        parts += ["<h2>By prompt-length bucket</h2>", _html_table(*_bucket_answer_rows(doc)),
                  f"<p class='muted'>{e(BUCKETS_TEXT)}</p>", _html_table(*_group_stage_rows(doc))]  # fmt: skip
    if w.get("images"):
        parts += ["<h2>By image size</h2>", f"<p class='muted'>{e(_images_text(w))}</p>",
                  _html_table(*_group_stage_rows(doc, "imageSizes"))]  # fmt: skip
    parts += ["<h2>Instances and cost vs request rate</h2>", _html_table(*_view_rows(doc))]
    parts += [img("cost_vs_throughput.png"), img("cost_vs_rate.png"), img("heatmap.png")]
    if any(v.get("accuracy") for v in doc["variants"]):
        parts += [
            "<h2>Accuracy and cost</h2>",
            _html_table(*_accuracy_rows(doc)),
            f"<p class='muted'>{e(ACCURACY_TEXT)}</p>",
        ]
    if doc["analysis"].get("day"):
        parts += ["<h2>A day of traffic</h2>", _html_table(*_day_rows(doc)), f"<p class='muted'>{e(day_text(doc))}</p>"]
    errors = _error_rows(doc)
    parts.append("<h2>Errors by reason</h2>")
    parts.append(_html_table(*errors) if errors[1] else "<p>No request failed.</p>")
    parts += ["<h2>Client health</h2>", _html_table(*_client_rows(doc)), f"<p class='muted'>{e(CLIENT_HEALTH)}</p>"]
    sm = doc["serverMetrics"]
    parts.append("<h2>Server metrics (Prometheus)</h2>")
    parts.append(_html_table(*_server_rows(doc)) if sm["collected"] else f"<p>{e(sm['reason'] or '')}</p>")
    if sm["collected"]:
        parts.append(f"<p class='muted'>Series read (docs/metrics.md): {e('; '.join(server_series(doc)))}</p>")
    if doc["notes"]:
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{e(n)}</li>" for n in doc["notes"]), "</ul>"]
    parts += ["<h2>Provenance</h2><ul>", *(f"<li>{e(line)}</li>" for line in provenance(doc)), "</ul>"]
    parts.append(
        "<p class='muted'>Definitions: docs/metrics.md (TTFT, TPOT, ITL, NTPOT, throughput, percentiles and their "
        "confidence intervals) and docs/cost-model.md (prices, N, cost formulas).</p></body></html>"
    )
    return "\n".join(p for p in parts if p)


# ---- Markdown -------------------------------------------------------------------------------


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(doc: Doc, plot_names: Sequence[str]) -> str:
    w, slo = doc["workload"], doc["slo"]
    out = [f"# {doc['benchmark']} (run {doc['runId']})", ""]
    if doc["partial"]:
        out += ["> **Partial report**: the run did not finish; some stages may be missing.", ""]
    out += [
        f"**{headline(doc)}**", "",
        f"Workload: R = {w['requestsPerMinute']:g} requests/min, P ≈ {fmt(w['promptTokens']['mean'])}"
        f"{_in_buckets(w)}, G ≈ {fmt(w['outputTokens']['mean'])} tokens. "
        f"SLO: {slo_text(slo)}, "
        f"error rate ≤ {slo['maxErrorRate']:.2%}.", "",
        "## Variants", "", _md_table(*_variant_rows(doc)), "",
    ]  # fmt: skip
    for name in plot_names:
        if name == "business_summary.png":
            out += [f"![{PLOTS[name]}](plots/{name})", ""]
    out += ["## Stages", ""]
    for v in doc["variants"]:
        out += [f"### {v['name']}", "", _md_table(*_stage_rows(doc, v)), ""]
        out += [f"- {n}" for n in v["notes"]]
    if w.get("buckets"):
        out += ["## By prompt-length bucket", "", _md_table(*_bucket_answer_rows(doc)), "", BUCKETS_TEXT, ""]
        out += [_md_table(*_group_stage_rows(doc)), ""]
    if w.get("images"):
        out += ["## By image size", "", _images_text(w), "", _md_table(*_group_stage_rows(doc, "imageSizes")), ""]
    out += ["## Instances and cost vs request rate", "", _md_table(*_view_rows(doc)), ""]
    out += [f"![{PLOTS.get(n, n)}](plots/{n})" for n in plot_names if n != "business_summary.png"]
    if any(v.get("accuracy") for v in doc["variants"]):
        out += ["", "## Accuracy and cost", "", _md_table(*_accuracy_rows(doc)), "", ACCURACY_TEXT]
    if doc["analysis"].get("day"):
        out += ["", "## A day of traffic", "", _md_table(*_day_rows(doc)), "", day_text(doc)]
    errors = _error_rows(doc)
    out += ["", "## Errors by reason", "", _md_table(*errors) if errors[1] else "No request failed."]
    out += ["", "## Client health", "", _md_table(*_client_rows(doc)), "", CLIENT_HEALTH]
    sm = doc["serverMetrics"]
    out += ["", "## Server metrics", "", _md_table(*_server_rows(doc)) if sm["collected"] else sm["reason"] or ""]
    if sm["collected"]:
        out += ["", f"Series read (docs/metrics.md): {'; '.join(server_series(doc))}"]
    if doc["notes"]:
        out += ["", "## Notes", "", *(f"- {n}" for n in doc["notes"])]
    out += ["", "## Provenance", "", *(f"- {line}" for line in provenance(doc))]
    return "\n".join(out) + "\n"


# ---- CSV ------------------------------------------------------------------------------------


def _csv(fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    return buf.getvalue()


def stages_csv(doc: Doc) -> str:
    """One row per variant × stage; latency columns are <metric>_<stat> in seconds."""
    scalar = [
        "stage", "target", "targetKind", "windowStart", "windowEnd", "windowSeconds", "requests", "ok", "errors",
        "incomplete", "errorRate", "throughputRpm", "outputTokensPerS", "inputTokensPerS", "meanPromptTokens",
        "meanOutputTokens", "goodputRps", "sloAttainment", "sloPercentile", "meetsSlo", "sloVerdict", "clientBound",
    ]  # fmt: skip
    latency = [f"{m}_{p}" for m in LATENCY_METRICS for p in PCTS]
    fields = ["variant", *scalar, "sloCiLow", "sloCiHigh", *latency, "errorsByReason"]
    rows = []
    for v in doc["variants"]:
        for s in v["stages"]:
            row: dict[str, Any] = {"variant": v["name"], **{k: s[k] for k in scalar}}
            row.update({f"{m}_{p}": s[m][p] for m in LATENCY_METRICS for p in PCTS})
            row["sloCiLow"], row["sloCiHigh"] = s["sloPercentileCi"]["low"], s["sloPercentileCi"]["high"]
            row["errorsByReason"] = ";".join(f"{k}={n}" for k, n in sorted(s["errorsByReason"].items()))
            rows.append(row)
    return _csv(fields, rows)


def variants_csv(doc: Doc) -> str:
    fields = [
        "name", "kind", "model", "servedBy", "instanceType", "replicas", "pricePerHour", "priceSource", "meetsSlo",
        "maxConcurrencyMeetingSlo", "throughputRpmAtSlo", "throughputRpmPerInstance", "latencyAtSloSeconds",
        "instancesNeeded", "costPerHour", "costPer1kRequests", "costPer1mInputTokens", "costPer1mOutputTokens",
        "reason",
    ]  # fmt: skip
    return _csv(fields, [{k: v[k] for k in fields} for v in doc["variants"]])


RENDERERS: dict[str, Callable[[Doc], str]] = {"stages.csv": stages_csv, "variants.csv": variants_csv}
