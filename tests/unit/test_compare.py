"""`compare` as a CI gate, against ground truth: runs synthesized with known differences and
analyzed, so that a regression must be there to be found and noise must not be called one."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fmbench_k8s.analysis.compare import compare
from fmbench_k8s.analysis.run import analyze_run, load_report
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.cli import main
from fmbench_k8s.contract.report import Report, parse_report
from fmbench_k8s.storage import LocalStorage

SPEC = BenchmarkSpec.model_validate({
    "variants": [
        {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
        {"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "simulator"},
        {"name": "gone", "instanceType": "g6.2xlarge", "engine": "simulator"},
    ],
    "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
    "slo": {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 2.0}, "maxErrorRate": 0.02},
})  # fmt: skip
LEVELS = (1, 4, 16)


def _run(root: Path, seed: int, g6e_itl_s: float, *, with_gone: bool = True, name: str = "demo") -> Path:
    variants = [
        SyntheticVariant("g5", levels=LEVELS, ttft_s=0.15, itl_s=0.02, slowdown=0.05, output_tokens=64),
        SyntheticVariant("g6e", levels=LEVELS, ttft_s=0.1, itl_s=g6e_itl_s, slowdown=0.04, output_tokens=64),
    ]
    if with_gone:
        variants.append(SyntheticVariant("gone", levels=LEVELS, ttft_s=0.1, itl_s=0.01, output_tokens=64))
    table, stages = synthesize_table(variants, stage_s=30, warmup_s=5, drain_s=10, seed=seed)
    write_run(LocalStorage(root), table, stages)
    analyze_run(SPEC, LocalStorage(root), benchmark=name, run_id=root.name, plots=False)
    return root


def _report(run: Path) -> Report:
    return parse_report(load_report(LocalStorage(run)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "base": _run(root / "base", seed=1, g6e_itl_s=0.012),
        "rerun": _run(root / "rerun", seed=2, g6e_itl_s=0.012),  # the same servers, other samples
        "slower": _run(root / "slower", seed=3, g6e_itl_s=0.03, with_gone=False),  # g6e 2.5× slower per token
    }


def test_a_rerun_of_the_same_servers_is_no_regression(runs: dict[str, Path]) -> None:
    result = compare(_report(runs["base"]), _report(runs["rerun"]))
    assert result.regressions == [] and not result.refusals
    assert result.headline() == "No significant regression (threshold 5%)."


def test_a_slower_server_is_a_significant_regression_with_its_evidence(runs: dict[str, Path]) -> None:
    result = compare(_report(runs["base"]), _report(runs["slower"]))
    by = {r.variant: r for r in result.rows}
    assert [r.variant for r in result.regressions] == ["g6e"]
    evidence = " ".join(by["g6e"].reasons)
    assert "SLO percentile" in evidence or "met the SLO in A, fails it in B" in evidence
    assert by["g5"].verdict != "regression"
    assert by["gone"].verdict == "not run in B"  # a variant not run is not a regression
    # ... and the other way round it is an improvement, not a regression
    back = compare(_report(runs["slower"]), _report(runs["base"]))
    assert {r.variant: r.verdict for r in back.rows}["g6e"] == "improvement" and back.regressions == []


def test_runs_of_different_benchmarks_are_refused_unless_allowed(tmp_path: Path, runs: dict[str, Path]) -> None:
    other = _run(tmp_path / "other", seed=1, g6e_itl_s=0.012, name="another")
    refused = compare(_report(runs["base"]), _report(other))
    assert refused.refusals == [
        "different Benchmarks (demo and another); give --allow-different to compare them anyway"
    ]
    allowed = compare(_report(runs["base"]), _report(other), allow_different=True)
    assert not allowed.refusals and "compared anyway" in allowed.warnings[0]


def test_the_cli_gate_exit_codes_and_junit(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "compare.xml"
    assert main(["compare", str(runs["base"]), str(runs["rerun"])]) == 0
    assert main(["compare", str(runs["base"]), str(runs["slower"]), "--junit", str(junit)]) == 4
    out = capsys.readouterr().out
    assert "| g6e |" in out and "**REGRESSION**" in out and "1 significant regression(s)" in out
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["g6e"]
    doc = json.loads((runs["rerun"] / "report.json").read_text())
    doc["benchmark"] = "another"
    (tmp_path / "other.json").write_text(json.dumps(doc))
    assert main(["compare", str(runs["base"]), str(tmp_path / "other.json")]) == 1
    assert "Not compared: different Benchmarks" in capsys.readouterr().out
