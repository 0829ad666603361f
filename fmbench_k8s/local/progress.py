"""Live progress of a local run, fed by the load generator master's JSON-lines events."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fmbench_k8s.contract.summary import Summary


def _fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):{spec}}{unit}"
    except (TypeError, ValueError):
        return str(value)


class Progress:
    """Every stage of every variant: finished ones with their SLO verdict and where the search went
    next, the running one with its live counts. On a terminal a table redrawn in place; elsewhere
    (logs, CI) one line per finished stage."""

    COLUMNS = ("variant", "stage", "load", "requests", "errors", "SLO", "verdict", "req/min", "next", "left", "state")

    def __init__(self, console: Console, variants: list[str]) -> None:
        self.console = console
        self._rows: dict[str, dict[str, Any]] = {v: {"state": "waiting"} for v in variants}
        self._finished: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        self._pending: dict[str, dict[str, Any]] = {}  # a finished stage whose search decision may follow
        self._lock = threading.Lock()
        self._live: Live | None = None

    def feed(self, line: str) -> None:
        """Called from the master's stdout reader; non-JSON lines are log lines and ignored here."""
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict) or "variant" not in event:
            return
        name, kind = str(event["variant"]), str(event.get("event", ""))
        printed: list[str] = []
        with self._lock:
            row = self._rows.setdefault(name, {})
            self._finished.setdefault(name, [])
            if kind == "search" and name in self._pending:
                finished = self._pending.pop(name)
                finished["next"] = _next(event)
                printed.append(self._line(name, finished))
            elif name in self._pending:  # no decision for that stage (interrupted, endpoint lost)
                printed.append(self._line(name, self._pending.pop(name)))
            if kind == "stage_start":  # the last stage's verdict is not this one's
                row.clear()
            if kind != "search":
                row.update({k: v for k, v in event.items() if v is not None})
                row["state"] = kind or row.get("state", "")
            if kind == "stage_end":
                finished = dict(row, state="done")
                self._finished[name].append(finished)
                self._pending[name] = finished
            if kind == "done":
                c_star = event.get("c_star")
                found = f"c*={c_star:g}" if isinstance(c_star, int | float) else "no level met the SLO"
                why = f"  ({event['reason']})" if event.get("reason") else ""
                printed.append(f"variant={name}  done after {event.get('stages')} stages: {found}{why}")
        if self._live is not None:
            self._live.update(self.table())
            return
        for text in printed:  # one line each: logs and CI must not wrap them
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def failure(self, variant: str) -> str | None:
        """The master's error message for ``variant`` (its ``error`` event), if it reported one."""
        with self._lock:
            message = self._rows.get(variant, {}).get("message")
        return str(message) if message else None

    def _cells(self, name: str, row: dict[str, Any]) -> list[str]:
        return [
            name,
            _fmt(row.get("stage"), "d") if isinstance(row.get("stage"), int) else "-",
            _fmt(row.get("target"), "g"),
            _fmt(row.get("requests"), "d") if isinstance(row.get("requests"), int) else "-",
            _fmt(row.get("errors"), "d") if isinstance(row.get("errors"), int) else "-",
            _slo(row),
            str(row.get("slo_outcome") or "-"),
            _fmt(row.get("throughput_rpm"), ".0f"),
            str(row.get("next") or "-"),
            _fmt(row.get("eta_s"), ".0f", "s"),
            str(row.get("state", "")),
        ]

    def _line(self, name: str, row: dict[str, Any]) -> str:
        cells = dict(zip(self.COLUMNS, self._cells(name, row), strict=True))
        del cells["left"], cells["state"]
        return "  ".join(f"{c}={v}" for c, v in cells.items())

    def table(self) -> Table:
        table = Table(title="load stages", expand=False)
        for col in self.COLUMNS:
            table.add_column(col, justify="left" if col in ("variant", "SLO", "next", "state") else "right")
        with self._lock:
            for name, row in self._rows.items():
                for finished in self._finished.get(name, []):
                    table.add_row(*self._cells(name, finished))
                if row.get("state") not in ("stage_end", "done"):
                    table.add_row(*self._cells(name, row))
        return table

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        if not self.console.is_terminal:
            yield  # logs and CI: one line per finished stage instead of a redrawn table
            return
        with Live(self.table(), console=self.console, refresh_per_second=4) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None


def _slo(row: dict[str, Any]) -> str:
    """``p90 e2e 1.234s [1.101, 1.302]``: the spec's percentile of its metric and its interval."""
    if not row.get("slo_metric") or row.get("slo_value") is None:
        return "-"
    pct = f"p{row['slo_percentile']:g} " if isinstance(row.get("slo_percentile"), int | float) else ""
    low, high = row.get("slo_ci_low"), row.get("slo_ci_high")
    ci = f" [{_fmt(low, '.3f')}, {_fmt(high, '.3f')}]" if low is not None or high is not None else ""
    return f"{pct}{row['slo_metric']} {_fmt(row['slo_value'], '.3f', 's')}{ci}"


def _next(event: dict[str, Any]) -> str:
    """Where the search went after a stage: stop, or the next level and why."""
    nxt = event.get("next")
    if event.get("decision") == "stop" or not isinstance(nxt, int | float):
        return "stop"
    return f"{'↑' if event.get('decision') == 'higher' else '↓'} {nxt:g}"


def summary_table(summary: Summary) -> Table:
    """Per variant: the level meeting the SLO, its throughput, N, $/hour, $/1k requests, or why not.
    A c* that is only a lower bound shows as "≥c*", and N and $/hour then as "≤" (upper bounds)."""
    table = Table(title="result per variant")
    for col in ("variant", "type", "c*", "req/min at c*", "SLO latency", "N", "$/hour", "$/1k req", "note"):
        table.add_column(col, justify="left" if col in ("variant", "type", "note") else "right")
    for v in summary.variants:
        low, high = ("≥", "≤") if v.capacity_lower_bound else ("", "")
        table.add_row(
            v.name,
            v.instance_type or "-",
            low + _fmt(v.max_concurrency_meeting_slo, "g") if v.max_concurrency_meeting_slo is not None else "-",
            _fmt(v.throughput_rpm_at_slo, ".0f"),
            _fmt(v.latency_at_slo_seconds, ".3f", "s"),
            high + _fmt(v.instances_needed, "g") if v.instances_needed is not None else "-",
            high + _fmt(v.cost_per_hour, ".2f") if v.cost_per_hour is not None else "-",
            high + _fmt(v.cost_per_1k_requests, ".4f") if v.cost_per_1k_requests is not None else "-",
            escape(v.reason or ""),
        )
    return table


RESULT_FORMATS = ("table", "json", "yaml")


def print_result(console: Console, summary: Summary, result_format: str = "table") -> None:
    """The answer: the table per variant and the recommendation; json or yaml: the summary document
    alone on stdout, for scripts."""
    if result_format == "json":
        sys.stdout.write(json.dumps(summary.doc(), indent=2) + "\n")
        return
    if result_format == "yaml":
        sys.stdout.write(yaml.safe_dump(summary.doc(), sort_keys=False))
        return
    console.print(summary_table(summary))
    rec = summary.recommendation
    for v in summary.variants:
        if v.buckets_missing_slo:
            console.print(
                f"[yellow]{escape(v.name)}: at the level it is sized at, the requests of bucket(s) "
                f"{escape(', '.join(v.buckets_missing_slo))} miss the SLO (the report's By prompt-length bucket)[/]"
            )
    not_run = [v.name for v in summary.variants if v.stages == 0]
    if not_run:
        console.print(f"[yellow]not run: {escape(', '.join(not_run))}; the answer covers only the others[/]")
    if rec:
        among = "among the variants that ran, " if not_run else ""
        console.print(f"[bold green]recommendation:[/] {among}{escape(rec.headline())}")
    else:
        console.print("[bold red]no variant meets the SLO[/] (reasons in the table above)")
    console.print(f"report: {summary.report_uri}")
