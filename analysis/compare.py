"""Two runs of one Benchmark compared, as a CI gate: only what the numbers can tell apart counts.

A regression has to be significant; a change in a point estimate is not enough:
- **capacity**: a load level that met the SLO in the baseline (A) fails it in the candidate (B).
  Both are decided by the SLO verdict's test (contract/verdict.py), so noise cannot flip them;
  an inconclusive stage decides nothing.
- **latency**: at a level both ran, B's confidence interval of the SLO percentile lies wholly above
  A's, and the point estimate rose by more than the threshold.
- **price**: the price per instance-hour rose by more than the threshold (a fact, not a sample).
- **the SLO lost**: A met the SLO and B has a conclusive failure where A met it.

Changes of X* or $/1k beyond the threshold without such evidence are shown as "not significant".
Runs of different Benchmarks, SLOs or workloads are refused unless the caller allows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from fmbench_k8s.contract.report import Report, Stage, Variant


@dataclass(frozen=True)
class Row:
    variant: str
    verdict: str  # regression | improvement | same | inconclusive | only in A/B | not run in A/B
    reasons: tuple[str, ...] = ()
    a: Variant | None = None
    b: Variant | None = None


@dataclass(frozen=True)
class Comparison:
    a: Report
    b: Report
    threshold: float
    rows: list[Row]
    refusals: list[str] = field(default_factory=list)  # why the runs are not comparable
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    def markdown(self) -> str:
        a, b = self.a, self.b
        lines = [f"Comparing {a.benchmark} run {a.run_id} (A, baseline) with {b.benchmark} run {b.run_id} (B)"]
        lines += [f"Refused: {r}" for r in self.refusals] + [f"Warning: {w}" for w in self.warnings]
        lines += [
            "",
            "| variant | X* req/min at SLO | SLO latency (s) | $/1k requests | verdict | evidence |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            if r.a is None or r.b is None:
                lines.append(f"| {r.variant} | | | | {r.verdict} | |")
                continue
            cells = (
                _cell(r.a.throughput_rpm_at_slo, r.b.throughput_rpm_at_slo),
                _cell(r.a.latency_at_slo_seconds, r.b.latency_at_slo_seconds),
                _cell(r.a.cost_per_1k_requests, r.b.cost_per_1k_requests, "$"),
            )
            verdict = "**REGRESSION**" if r.verdict == "regression" else r.verdict
            lines.append(f"| {r.variant} | {' | '.join(cells)} | {verdict} | {'; '.join(r.reasons)} |")
        lines += ["", f"Recommendation: A {_rec(a)}; B {_rec(b)}.", self.headline()]
        return "\n".join(lines) + "\n"

    def headline(self) -> str:
        if self.refusals:
            return "Not compared: " + "; ".join(self.refusals)
        n = len(self.regressions)
        if n:
            return f"{n} significant regression(s) (threshold {self.threshold:.0%})."
        return f"No significant regression (threshold {self.threshold:.0%})."

    def junit(self) -> str:
        """JUnit XML: one test case per variant, a regression as its failure (CI systems show these)."""
        cases = []
        for r in self.rows:
            name = quoteattr(r.variant)
            said = "; ".join(r.reasons)
            body = (
                f"<failure message={quoteattr(said)}>{escape(self.markdown())}</failure>"
                if r.verdict == "regression"
                else f"<system-out>{escape(r.verdict + (': ' + said if said else ''))}</system-out>"
            )
            cases.append(f'  <testcase classname="fmbench-k8s.compare" name={name}>{body}</testcase>')
        failures = len(self.regressions)
        suite = quoteattr(f"{self.a.benchmark}: {self.a.run_id} → {self.b.run_id}")
        head = f'<testsuite name={suite} tests="{len(self.rows)}" failures="{failures}" errors="0">'
        return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head, *cases, "</testsuite>"]) + "\n"


def compare(a: Report, b: Report, *, threshold: float = 0.05, allow_different: bool = False) -> Comparison:
    """Report ``b`` (candidate) against ``a`` (baseline)."""
    different = []
    if a.benchmark != b.benchmark:
        different.append(f"different Benchmarks ({a.benchmark} and {b.benchmark})")
    if a.slo != b.slo:
        different.append("the SLOs differ")
    if a.workload != b.workload:
        different.append("the workloads differ (R, P or G)")
    warnings = [f"run {r.run_id} is partial: it did not finish" for r in (a, b) if r.partial]
    refusals: list[str] = []
    if different and allow_different:
        warnings += [f"{d}; compared anyway" for d in different]
    elif different:
        refusals = [f"{d}; give --allow-different to compare them anyway" for d in different]
    va = {v.name: v for v in a.variants}
    vb = {v.name: v for v in b.variants}
    rows = []
    for name in [*va, *(n for n in vb if n not in va)]:
        if name not in vb or name not in va:
            rows.append(Row(name, f"only in {'A' if name in va else 'B'}"))
            continue
        if not va[name].stages or not vb[name].stages:  # in the spec, but no load ran
            rows.append(Row(name, f"not run in {'A' if not va[name].stages else 'B'}", (), va[name], vb[name]))
            continue
        rows.append(_row(va[name], vb[name], threshold))
    return Comparison(a, b, threshold, rows, refusals, warnings)


def _row(x: Variant, y: Variant, threshold: float) -> Row:
    worse: list[str] = []
    better: list[str] = []
    sa, sb = _by_level(x.stages), _by_level(y.stages)
    for level in sorted(set(sa) & set(sb)):
        p, q = sa[level], sb[level]
        if p.slo_outcome == "meets" and q.slo_outcome == "fails":
            worse.append(f"level {level:g}: met the SLO in A, fails it in B ({q.slo_verdict})")
        elif p.slo_outcome == "fails" and q.slo_outcome == "meets":
            better.append(f"level {level:g}: failed the SLO in A, meets it in B")
        latency = _latency_shift(p, q, threshold)
        if latency is not None:
            (worse if latency[0] else better).append(f"level {level:g}: {latency[1]}")
    if x.price_per_hour and y.price_per_hour:
        change = (y.price_per_hour - x.price_per_hour) / x.price_per_hour
        if abs(change) > threshold:
            text = f"price ${x.price_per_hour:,.4g} → ${y.price_per_hour:,.4g}/instance-hour ({change:+.1%})"
            (worse if change > 0 else better).append(text)
    if worse:
        return Row(x.name, "regression", tuple(worse), x, y)
    if better:
        return Row(x.name, "improvement", tuple(better), x, y)
    moved = [
        what
        for what, old, new, bad in (
            ("X*", x.throughput_rpm_at_slo, y.throughput_rpm_at_slo, -1),
            ("$/1k", x.cost_per_1k_requests, y.cost_per_1k_requests, 1),
        )
        if old and new is not None and abs((new - old) / old) > threshold and bad * (new - old) > 0
    ]
    if moved or (x.meets_slo and not y.meets_slo):
        why = [f"{m} worse beyond the threshold, not significant" for m in moved]
        if x.meets_slo and not y.meets_slo:
            why.append("B does not meet the SLO, but no level A met fails conclusively in B")
        return Row(x.name, "inconclusive", tuple(why), x, y)
    return Row(x.name, "same", (), x, y)


def _by_level(stages: Iterable[Stage]) -> dict[float, Stage]:
    """The last stage run at each level (a search may revisit one)."""
    return {s.target: s for s in stages if s.target is not None}


def _latency_shift(p: Stage, q: Stage, threshold: float) -> tuple[bool, str] | None:
    """(worse?, text) when the SLO percentile's intervals at one level do not overlap and the point
    moved by more than the threshold; None otherwise."""
    ca, cb = p.slo_percentile_ci, q.slo_percentile_ci
    if None in (ca.low, ca.high, cb.low, cb.high, p.slo_percentile, q.slo_percentile) or not p.slo_percentile:
        return None
    assert ca.low is not None and ca.high is not None and cb.low is not None and cb.high is not None
    assert p.slo_percentile is not None and q.slo_percentile is not None
    change = (q.slo_percentile - p.slo_percentile) / p.slo_percentile
    text = (
        f"SLO percentile {p.slo_percentile:.3g} s [{ca.low:.3g}, {ca.high:.3g}] → "
        f"{q.slo_percentile:.3g} s [{cb.low:.3g}, {cb.high:.3g}] ({change:+.1%})"
    )
    if cb.low > ca.high and change > threshold:
        return True, text
    if cb.high < ca.low and change < -threshold:
        return False, text
    return None


def _cell(old: float | None, new: float | None, unit: str = "") -> str:
    def show(value: float | None) -> str:
        return "—" if value is None else f"{unit}{value:,.4g}"

    delta = f" ({(new - old) / old:+.1%})" if old and new is not None else ""
    return f"{show(old)} → {show(new)}{delta}"


def _rec(report: Report) -> str:
    r = report.recommendation
    return "none" if r is None else f"{r.variant} × {r.instances} at ${r.cost_per_hour:,.4g}/h"
