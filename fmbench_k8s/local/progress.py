"""Live progress of a local run, fed by the load generator master's JSON-lines events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

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
    """One row per variant: its current stage, load, requests and latency, time left."""

    COLUMNS = ("variant", "stage", "load", "requests", "errors", "SLO latency", "verdict", "req/min", "left", "state")

    def __init__(self, console: Console, variants: list[str]) -> None:
        self.console = console
        self._rows: dict[str, dict[str, Any]] = {v: {"state": "waiting"} for v in variants}
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
        with self._lock:
            row = self._rows.setdefault(str(event["variant"]), {})
            if event.get("event") == "stage_start":  # the last stage's verdict is not this one's
                for key in ("slo_value", "slo_outcome", "slo_metric", "throughput_rpm"):
                    row.pop(key, None)
            row.update({k: v for k, v in event.items() if v is not None})
            row["state"] = str(event.get("event", row.get("state", "")))
            row["at"] = time.monotonic()
        if self._live is not None:
            self._live.update(self.table())
        elif row["state"] == "stage_end":  # one line per line: logs and CI must not wrap it
            self.console.print(self._line(str(event["variant"]), row), soft_wrap=True)
        elif row["state"] == "done":
            c_star = event.get("c_star")
            found = f"c*={c_star:g}" if isinstance(c_star, int | float) else "no level met the SLO"
            why = f"  ({event['reason']})" if event.get("reason") else ""
            self.console.print(f"variant={event['variant']}  done after {event.get('stages')} stages: {found}{why}",
                               soft_wrap=True, markup=False)  # fmt: skip

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
            f"{row['slo_metric']} {_fmt(row.get('slo_value'), '.3f', 's')}" if row.get("slo_metric") else "-",
            str(row.get("slo_outcome") or "-"),
            _fmt(row.get("throughput_rpm"), ".0f"),
            _fmt(row.get("eta_s"), ".0f", "s"),
            str(row.get("state", "")),
        ]

    def _line(self, name: str, row: dict[str, Any]) -> str:
        return "  ".join(f"{c}={v}" for c, v in zip(self.COLUMNS, self._cells(name, row), strict=True))

    def table(self) -> Table:
        table = Table(title="load", expand=False)
        for col in self.COLUMNS:
            table.add_column(col, justify="left" if col in ("variant", "state") else "right")
        with self._lock:
            for name, row in self._rows.items():
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
