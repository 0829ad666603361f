"""The report's figures as PNG bytes, drawn from report.json content.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly: no pyplot global
state, no backend selection, safe in a server process.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fmbench_k8s.contract.stats import FloatArray

Doc = Mapping[str, Any]
# Plot file name → (title shown in the report, what it answers).
PLOTS: Final = {
    "business_summary.png": "Cost per 1k requests vs SLO latency",
    "latency_vs_load.png": "Latency percentiles vs load",
    "throughput_vs_load.png": "Throughput vs load",
    "latency_vs_throughput.png": "SLO latency vs throughput",
    "latency_cdf.png": "Latency CDFs at each variant's sizing level",
    "cost_vs_throughput.png": "Cost per 1k requests vs throughput",
    "latency_over_time.png": "SLO latency over each sizing stage's steady window",
    "ttft_distribution.png": "TTFT distribution",
    "tpot_distribution.png": "TPOT distribution",
    "cost_vs_rate.png": "Instances and cost vs request rate",
    "heatmap.png": "Cost per hour by request rate and variant",
}
_SLO_COLOR = "#c0392b"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


_PLAIN = FuncFormatter(lambda value, _: f"{value:,.10g}")  # numbers as written: 1, 16, 1,000, 0.5


def _target_axis(ax: Axes, targets: Sequence[float], kind: str) -> None:
    ax.set_xlabel("target concurrency" if kind == "concurrency" else "target rate (requests/s)")
    positive = [t for t in targets if t and t > 0]
    if positive and max(positive) / min(positive) >= 8:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_PLAIN)  # 16, not 2^4 or 16.0


def _kind(doc: Doc) -> str:
    return next((str(v["stages"][0]["targetKind"]) for v in doc["variants"] if v["stages"]), "concurrency")


def _stages(v: Doc) -> list[Doc]:
    return sorted((s for s in v["stages"] if s["target"] is not None), key=lambda s: s["target"])


def _num(x: Any) -> float:
    return float(x) if x is not None else math.nan


def business_summary(doc: Doc) -> bytes:
    slo = doc["slo"]
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    ax.axvspan(0, slo["maxSeconds"], color="#2ecc71", alpha=0.12, label=f"meets p{slo['percentile']:g} ≤ SLO")
    ax.axvline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", lw=1)
    rec = doc.get("recommendation")
    star = (rec["latencySeconds"], rec["costPer1kRequests"]) if rec and rec.get("latencySeconds") is not None else None
    series = []
    for color, v in zip(_colors(len(doc["variants"])), doc["variants"], strict=True):
        pts = [
            (s, _num(s["sloPercentile"]), _num((s["atThisLevel"] or {}).get("costPer1kRequests"))) for s in _stages(v)
        ]
        series.append((color, v, [p for p in pts if math.isfinite(p[1]) and math.isfinite(p[2])]))
    costs = [y for _, _, pts in series for _, _, y in pts]
    xs_all = [x for _, _, pts in series for _, x, _ in pts]
    span = (max(xs_all, default=1) - min(xs_all, default=0) or 1, max(costs, default=1) - min(costs, default=0) or 1)
    labelled: list[tuple[float, float]] = [star] if star else []  # the star's box names its own level

    def clear(x: float, y: float) -> bool:  # no level label on top of another (or of the star)
        return all(abs(x - a) / span[0] > 0.04 or abs(y - b) / span[1] > 0.04 for a, b in labelled)

    for color, v, pts in series:
        if not pts:
            continue
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "-", color=color, lw=1, alpha=0.6)
        for s, x, y in pts:
            ax.plot(x, y, "o", color=color, mfc=color if s["meetsSlo"] else "white", ms=6)
            if clear(x, y):
                ax.annotate(f"{s['target']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
                labelled.append((x, y))
        ax.plot([], [], "o", color=color, label=v["name"])
    if rec and star:
        ax.plot(*star, "*", ms=18, color="gold", mec="black", zorder=5)
        level = rec.get("maxConcurrencyMeetingSlo")
        at = f" at level {level:g}" if isinstance(level, int | float) else ""
        ax.annotate(
            f"recommended: {rec['variant']} × {rec['instances']}{at}\n${rec['costPer1kRequests']:.4g} per 1k requests",
            star, textcoords="offset points", xytext=(10, 10),
            fontsize=8, bbox={"boxstyle": "round", "fc": "lightyellow"},
        )  # fmt: skip
    if costs and max(costs) / max(min(costs), 1e-12) > 50:
        ax.set_yscale("log")
    ax.set_xlabel(f"p{slo['percentile']:g} {slo['metric']} latency (s) at each load level")
    ax.set_ylabel("USD per 1k requests at the workload's rate")
    ax.set_title(f"Cost vs latency (R = {doc['workload']['requestsPerMinute']:g} req/min); hollow = SLO not met")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def latency_vs_load(doc: Doc) -> bytes:
    slo = doc["slo"]
    metrics = ["ttft", "tpot", "itl", "e2e"]
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    colors = _colors(len(doc["variants"]))
    for ax, metric in zip(axes, metrics, strict=True):
        is_slo = metric == slo["metric"]
        targets: list[float] = []
        for color, v in zip(colors, doc["variants"], strict=True):
            st = _stages(v)
            if not st:
                continue
            x = [s["target"] for s in st]
            targets.extend(x)
            top = [_num(s["sloPercentile"]) if is_slo else _num(s[metric]["p95"]) for s in st]
            ax.plot(x, top, "o-", color=color, label=v["name"], ms=4)
            ax.plot(x, [_num(s[metric]["p50"]) for s in st], "--", color=color, lw=1, alpha=0.7)
        if is_slo:
            ax.axhline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", lw=1.2, label="SLO")
        _target_axis(ax, targets, _kind(doc))
        label = f"p{slo['percentile']:g}" if is_slo else "p95"
        ax.set_title(f"{metric}: {label} (solid), p50 (dashed)", fontsize=10)
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # nothing measured: no legend to draw
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def throughput_vs_load(doc: Doc) -> bytes:
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    targets: list[float] = []
    for color, v in zip(_colors(len(doc["variants"])), doc["variants"], strict=True):
        st = _stages(v)
        x = [s["target"] for s in st]
        targets.extend(x)
        ax1.plot(x, [_num(s["throughputRpm"]) for s in st], "o-", color=color, label=v["name"], ms=4)
        ax2.plot(x, [_num(s["outputTokensPerS"]) for s in st], "o-", color=color, label=v["name"], ms=4)
        meets = [s for s in st if s["meetsSlo"]]
        ax1.plot([s["target"] for s in meets], [s["throughputRpm"] for s in meets], "o", color=color, ms=8, alpha=0.3)
    for ax, label in ((ax1, "requests/min (steady window)"), (ax2, "output tokens/s")):
        _target_axis(ax, targets, _kind(doc))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.set_title("Throughput (halo: level meets the SLO)", fontsize=10)
    ax2.set_title("Output token throughput", fontsize=10)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def latency_vs_throughput(doc: Doc) -> bytes:
    """The SLO percentile (with its confidence interval) against the throughput each level gave:
    the curve the sizing reads, with the bound; hollow points did not meet the SLO."""
    slo = doc["slo"]
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for color, v in zip(_colors(len(doc["variants"])), doc["variants"], strict=True):
        st = sorted((s for s in v["stages"] if s["throughputRpm"] is not None and s["sloPercentile"] is not None),
                    key=lambda s: s["throughputRpm"])  # fmt: skip
        if not st:
            continue
        x = [s["throughputRpm"] for s in st]
        y = [s["sloPercentile"] for s in st]
        low = [y_ - _num(s["sloPercentileCi"]["low"]) for s, y_ in zip(st, y, strict=True)]
        high = [_num(s["sloPercentileCi"]["high"]) - y_ for s, y_ in zip(st, y, strict=True)]
        ax.plot(x, y, "-", color=color, lw=1, alpha=0.6)
        ax.errorbar(x, y, yerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="none", ecolor=color, capsize=3, lw=1)
        for s, xi, yi in zip(st, x, y, strict=True):
            ax.plot(xi, yi, "o", color=color, mfc=color if s["meetsSlo"] else "white", ms=6)
        ax.plot([], [], "o", color=color, label=v["name"])
    ax.axhline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", lw=1.2, label=f"SLO {slo['maxSeconds']:g} s")
    ax.set_xlabel("throughput (requests/min, steady window, all replicas of the variant)")
    ax.set_ylabel(f"p{slo['percentile']:g} {slo['metric']} (s), 95 % CI")
    ax.set_title(f"p{slo['percentile']:g} {slo['metric']} vs throughput; hollow = SLO not met")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def cost_vs_throughput(doc: Doc) -> bytes:
    """What 1k requests cost at the workload's rate if each level were the operating point, against
    the throughput that level gave; hollow points did not meet the SLO (their cost is not an option)."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    drawn = False
    for color, v in zip(_colors(len(doc["variants"])), doc["variants"], strict=True):
        pts = [
            (s, _num(s["throughputRpm"]), _num((s["atThisLevel"] or {}).get("costPer1kRequests"))) for s in v["stages"]
        ]
        pts = sorted((p for p in pts if math.isfinite(p[1]) and math.isfinite(p[2])), key=lambda p: p[1])
        if not pts:
            continue
        drawn = True
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "-", color=color, lw=1, alpha=0.6)
        for s, x, y in pts:
            ax.plot(x, y, "o", color=color, mfc=color if s["meetsSlo"] else "white", ms=6)
        ax.plot([], [], "o", color=color, label=v["name"])
    if not drawn:
        ax.text(0.5, 0.5, "no priced stage", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("throughput (requests/min, steady window, all replicas of the variant)")
    ax.set_ylabel("USD per 1k requests at the workload's rate")
    ax.set_title("Cost per 1k requests vs throughput; hollow = SLO not met")
    if drawn:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def latency_cdf(samples: Mapping[str, Mapping[str, FloatArray]], doc: Doc) -> bytes:
    """Empirical CDFs of TTFT, TPOT and E2E at each variant's sizing level, with the SLO's
    percentile and bound where they apply."""
    slo = doc["slo"]
    metrics = ("ttft", "tpot", "e2e")
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        per_variant = samples.get(metric, {})
        for color, (name, values) in zip(_colors(len(per_variant)), per_variant.items(), strict=True):
            finite = np.sort(values[np.isfinite(values)])
            if finite.size:
                ax.step(finite, np.arange(1, finite.size + 1) / finite.size, where="post", color=color, label=name)
        if slo["metric"] == metric:
            ax.axvline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", lw=1.2, label="SLO bound")
            ax.axhline(slo["percentile"] / 100, color="grey", ls=":", lw=1, label=f"p{slo['percentile']:g}")
        if not per_variant:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"{metric} (s)")
        ax.set_ylabel("share of ok requests ≤ x")
        ax.set_title(metric.upper())
        ax.grid(alpha=0.3)
        if per_variant:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def latency_over_time(samples: Mapping[str, Mapping[str, FloatArray]], doc: Doc) -> bytes:
    """Each ok request's SLO metric against when it was scheduled in the steady window of its
    variant's sizing stage, with the SLO's percentile over time slices: drift, stalls and a queue
    still filling show here and hide in one percentile per stage."""
    slo = doc["slo"]
    q = slo["percentile"]
    at, values = samples.get("at", {}), samples.get("slo", {})
    names = [n for n in at if at[n].size]
    fig = Figure(figsize=(10, 2.6 * max(1, len(names)) + 0.6))
    axes = fig.subplots(max(1, len(names)), 1, squeeze=False)[:, 0]
    for ax, color, name in zip(axes, _colors(len(names)), names, strict=False):
        t, v = at[name], values[name]
        keep = np.isfinite(v)
        t, v = t[keep], v[keep]
        ax.scatter(t, v, s=4, alpha=0.35, color=color, label=f"{name}: each request")
        if t.size:
            edges = np.linspace(0.0, max(float(t.max()), 1e-9), min(20, max(2, t.size // 10)) + 1)
            slot = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
            centers, pcts = [], []
            for i in range(edges.size - 1):
                inside = v[slot == i]
                if inside.size:
                    centers.append((edges[i] + edges[i + 1]) / 2)
                    pcts.append(float(np.percentile(inside, q)))
            ax.plot(centers, pcts, color=color, lw=1.8, marker="o", ms=3, label=f"p{q:g} per slice")
        ax.axhline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", lw=1.2, label="SLO bound")
        ax.set_ylabel(f"{slo['metric']} (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    if not names:
        axes[0].text(0.5, 0.5, "no samples", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("seconds into the steady window (when the request was scheduled)")
    fig.suptitle(f"{slo['metric'].upper()} over time at each variant's sizing level")
    fig.tight_layout()
    return _png(fig)


def distribution(samples: Mapping[str, FloatArray], metric: str, doc: Doc) -> bytes:
    """Histograms of one metric per variant (at the stage that sized it)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    finite = {k: v[np.isfinite(v)] for k, v in samples.items()}
    pooled = np.concatenate([v for v in finite.values() if v.size] or [np.empty(0)])
    if pooled.size:
        hi = float(np.percentile(pooled, 99.5))
        lo = float(pooled.min())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, 61)
        for color, (name, values) in zip(_colors(len(finite)), finite.items(), strict=True):
            if values.size:  # densities: variants with few samples stay visible next to busy ones
                clipped = np.clip(values, lo, edges[-1])
                bins = edges.tolist()
                ax.hist(clipped, bins=bins, density=True, alpha=0.3, color=color, label=f"{name} (n={values.size})")
                ax.hist(clipped, bins=bins, density=True, histtype="step", color=color, lw=1.2)
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    slo = doc["slo"]
    if slo["metric"] == metric:
        ax.axvline(slo["maxSeconds"], color=_SLO_COLOR, ls="--", label="SLO bound")
    ax.set_xlabel(f"{metric} (s); the top 0.5 % is folded into the last bin")
    ax.set_ylabel("density (1/s)")
    ax.set_title(f"{metric.upper()} distribution at each variant's sizing level")
    if pooled.size:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def cost_vs_rate(doc: Doc) -> bytes:
    view = doc["fmbenchView"]
    rates = view["requestsPerMinute"]
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    # Markers only: N is a step function of R known at these rates, and a line between them would
    # claim values that were not computed.
    for color, row in zip(_colors(len(view["rows"])), view["rows"], strict=True):
        ax1.plot(rates, [_num(n) for n in row["instances"]], "o", color=color, label=row["variant"], ms=5)
        ax2.plot(rates, [_num(c) for c in row["costPerHour"]], "o", color=color, label=row["variant"], ms=5)
    r = doc["workload"]["requestsPerMinute"]
    for ax, label, key in ((ax1, "instances N", "instances"), (ax2, "USD per hour", "costPerHour")):
        ax.axvline(r, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        # Numbers written out (1, 10, 100, … on the rate axis; 1, 2, 5, 10, … up the side), not 10⁰ or 6×10⁰.
        log_axes: list[tuple[Any, tuple[float, ...]]] = [(ax.xaxis, (1.0,))]
        if any(_num(x) > 0 for row in view["rows"] for x in row[key]):  # log of nothing fails (no variant sized)
            ax.set_yscale("log")
            log_axes.append((ax.yaxis, (1.0, 2.0, 5.0)))
        for axis, subs in log_axes:
            axis.set_major_locator(LogLocator(base=10, subs=subs))
            axis.set_major_formatter(_PLAIN)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("requests per minute R")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.set_title(f"Instances needed (dotted: workload R = {r:g})", fontsize=10)
    ax2.set_title("Cost per hour", fontsize=10)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def heatmap(doc: Doc) -> bytes:
    view = doc["fmbenchView"]
    rates, rows = view["requestsPerMinute"], view["rows"]
    cost = np.array([[_num(c) for c in row["costPerHour"]] for row in rows], dtype=float).reshape(len(rows), len(rates))
    fig = Figure(figsize=(max(6.0, 1.3 * len(rates) + 2), max(2.5, 0.6 * len(rows) + 1.5)))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(cost)
    positive = cost[np.isfinite(cost) & (cost > 0)]
    norm = None
    if positive.size:
        norm = LogNorm(vmin=float(positive.min()), vmax=float(max(positive.max(), positive.min() * 1.01)))
        image = ax.imshow(masked, aspect="auto", cmap="viridis", norm=norm)
        fig.colorbar(image, ax=ax, label="USD per hour")
    ax.set_facecolor("#dddddd")
    for i, row in enumerate(rows):
        for j, n in enumerate(row["instances"]):
            text = "—" if n is None else f"{n}\n${cost[i, j]:,.4g}"
            # dark text on the bright (expensive) end of viridis, light text elsewhere
            bright = n is None or norm is None or not cost[i, j] > 0 or norm(cost[i, j]) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if bright else "white")
    ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
    ax.set_yticks(range(len(rows)), [row["variant"] for row in rows])
    ax.set_xlabel("requests per minute R")
    ax.set_title("Instances N and cost per hour (— : SLO not met or price unknown)")
    return _png(fig)


def render_plots(doc: Doc, samples: Mapping[str, Mapping[str, FloatArray]]) -> dict[str, bytes]:
    """Every figure, keyed by file name (PLOTS); ``samples[metric][variant]`` feed the histograms."""
    makers: dict[str, Callable[[], bytes]] = {
        "business_summary.png": lambda: business_summary(doc),
        "latency_vs_load.png": lambda: latency_vs_load(doc),
        "throughput_vs_load.png": lambda: throughput_vs_load(doc),
        "latency_vs_throughput.png": lambda: latency_vs_throughput(doc),
        "latency_cdf.png": lambda: latency_cdf(samples, doc),
        "latency_over_time.png": lambda: latency_over_time(samples, doc),
        "cost_vs_throughput.png": lambda: cost_vs_throughput(doc),
        "ttft_distribution.png": lambda: distribution(samples.get("ttft", {}), "ttft", doc),
        "tpot_distribution.png": lambda: distribution(samples.get("tpot", {}), "tpot", doc),
        "cost_vs_rate.png": lambda: cost_vs_rate(doc),
        "heatmap.png": lambda: heatmap(doc),
    }
    return {name: make() for name, make in makers.items()}
