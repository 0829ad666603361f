"""The console of a local run, fed the master's own events: every stage of every variant with the
SLO the spec names (percentile, value, interval), its verdict and where the search went next."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console

from fmbench_k8s.local.progress import Progress


def _event(kind: str, variant: str = "g5", **fields: Any) -> str:
    return json.dumps({"event": kind, "variant": variant, **fields})


def _stage(stage: int, level: float, value: float, outcome: str, **extra: Any) -> list[str]:
    return [
        _event("stage_start", stage=stage, target=level, eta_s=30.0),
        _event("progress", stage=stage, target=level, requests=10, errors=0, eta_s=20.0),
        _event("stage_end", stage=stage, target=level, requests=80, errors=1, slo_metric="e2e", slo_percentile=90,
               slo_value=value, slo_ci_low=value * 0.9, slo_ci_high=value * 1.1, slo_outcome=outcome,
               throughput_rpm=600.0, **extra),
    ]  # fmt: skip


EVENTS = [
    *_stage(0, 8, 0.5, "meets"),
    _event("search", stage=0, target=8, passed=True, decision="higher", next=16, c_star=8),
    *_stage(1, 16, 2.5, "fails"),
    _event("search", stage=1, target=16, passed=False, decision="lower", next=12, c_star=8),
    *_stage(2, 12, 1.2, "meets"),
    _event("search", stage=2, target=12, passed=True, decision="stop", next=None, c_star=12),
    _event("done", stages=3, c_star=12),
]


def test_logs_get_one_unwrapped_line_per_stage_with_the_slo_verdict_and_the_next_level() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    progress = Progress(console, ["g5"])
    with progress.live():
        for line in [*EVENTS, "a log line, not JSON"]:
            progress.feed(line)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines  # three stages and the end, each on one line however narrow the console
    assert lines[0] == (
        "variant=g5  stage=0  load=8  requests=80  errors=1  SLO=p90 e2e 0.500s [0.450, 0.550]  verdict=meets  "
        "req/min=600  next=↑ 16"
    )
    assert "verdict=fails" in lines[1] and lines[1].endswith("next=↓ 12")
    assert lines[2].endswith("next=stop") and lines[3] == "variant=g5  done after 3 stages: c*=12"


def test_a_terminal_keeps_every_stage_of_every_variant_in_its_table() -> None:
    console = Console(file=io.StringIO(), width=200, force_terminal=True)
    progress = Progress(console, ["g5", "g6e"])
    for line in [*EVENTS[:8], *(e.replace('"g5"', '"g6e"') for e in EVENTS[:3])]:
        progress.feed(line)
    table = progress.table()
    rows = list(zip(*(col.cells for col in table.columns), strict=True))
    assert [(r[0], r[1], r[-3]) for r in rows] == [
        ("g5", "0", "↑ 16"), ("g5", "1", "↓ 12"), ("g6e", "0", "-"),  # g6e's stage 0 awaits its decision
    ]  # fmt: skip
    progress.feed(_event("stage_start", "g6e", stage=1, target=16))
    rows = list(zip(*(col.cells for col in progress.table().columns), strict=True))
    assert rows[-1][:3] == ("g6e", "1", "16") and rows[-1][-1] == "stage_start"  # the running stage, live
