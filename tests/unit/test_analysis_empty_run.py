"""A run where no load ran (every load generator failed, or Ctrl-C at once) still gets a report."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fmbench_k8s.analysis.plots import PLOTS
from fmbench_k8s.analysis.run import analyze_run
from fmbench_k8s.api import parse_benchmark
from fmbench_k8s.storage import LocalStorage
from tests.corpus import REPO


def test_no_records_still_gives_a_report_with_every_plot_and_the_reason(tmp_path: Path) -> None:
    bench = parse_benchmark(yaml.safe_load((REPO / "examples/quickstart.yaml").read_text()))
    summary = analyze_run(bench.spec, LocalStorage(tmp_path), benchmark="quickstart", run_id="r", partial=True,
                          notes=["variant g5-sim: load generator exited with code 1"])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["partial"] is True and report["recommendation"] is None
    assert summary.doc()["recommendation"] is None
    assert "variant g5-sim: load generator exited with code 1" in report["notes"]
    assert all(v["reason"] for v in report["variants"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(PLOTS)
