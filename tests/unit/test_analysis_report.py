"""analyze_run end to end on a local directory: report.json and its schema, HTML, Markdown, CSVs."""

from __future__ import annotations

import copy
import csv
import io
import json
import platform
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fmbench_k8s.analysis.metrics import AccountingError
from fmbench_k8s.analysis.plots import PLOTS
from fmbench_k8s.analysis.prometheus import collect_server_metrics, selector
from fmbench_k8s.analysis.run import analyze_run, load_report
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.contract.records import StageInfo
from fmbench_k8s.contract.report import parse_report, render_schema, report_schema
from fmbench_k8s.contract.summary import (
    InstancesInterval,
    OperatorSummary,
    Recommendation,
    Summary,
    VariantSummary,
)
from fmbench_k8s.local.processes import free_port
from fmbench_k8s.storage import LocalStorage
from tests.corpus import REPO

SPEC = BenchmarkSpec.model_validate({
    "variants": [
        {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
        {"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "simulator", "replicas": 2},
        {"name": "haiku", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude-3-haiku-20240307-v1:0"}},
        {"name": "mine", "endpoint": {"api": "openai-chat", "url": "http://vllm:8000/v1"}},
        {"name": "slow", "instanceType": "g6.2xlarge", "engine": "simulator"},
    ],
    "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
    "slo": {"latency": {"metric": "e2e", "percentile": 95, "maxSeconds": 3.0}, "maxErrorRate": 0.02},
})  # fmt: skip

VARIANTS = [
    SyntheticVariant("g5", levels=(1, 4, 16, 32), ttft_s=0.15, itl_s=0.02, slowdown=0.05, output_tokens=64),
    SyntheticVariant("g6e", levels=(1, 4, 16, 32), ttft_s=0.1, itl_s=0.012, slowdown=0.04, output_tokens=64),
    SyntheticVariant("haiku", levels=(4, 16), ttft_s=0.4, itl_s=0.01, slowdown=0.0, output_tokens=64),
    SyntheticVariant("mine", levels=(4,), ttft_s=0.2, itl_s=0.01, slowdown=0.0, output_tokens=64),
    SyntheticVariant("slow", levels=(1, 2), ttft_s=2.0, itl_s=0.1, slowdown=0.1, output_tokens=64),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    table, stages = synthesize_table(VARIANTS, stage_s=30, warmup_s=5, drain_s=30, seed=3)
    write_run(LocalStorage(root), table, stages)
    return root


@pytest.fixture(scope="module")
def analyzed(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = analyze_run(SPEC, LocalStorage(run_dir), benchmark="demo", run_id="r1").doc()
    return summary, json.loads((run_dir / "report.json").read_text())


def test_report_json_validates_and_adds_up(analyzed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, doc = analyzed
    parse_report(doc)
    jsonschema.Draft202012Validator(report_schema()).validate(doc)
    assert doc["schemaVersion"] == 2 and doc["benchmark"] == "demo" and not doc["partial"]
    for v in doc["variants"]:
        for s in v["stages"]:
            assert s["requests"] == s["ok"] + s["errors"] + s["incomplete"]
            assert s["requests"] >= s["steady"]["requests"]
    names = [v["name"] for v in doc["variants"]]
    assert names == ["g5", "g6e", "haiku", "mine", "slow"]
    # no 672.0000000000001: every float is written to 12 significant digits
    floats = _floats(doc)
    assert len(floats) > 100 and all(float(f"{x:.12g}") == x for x in floats)


def _floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _floats(v)]
    if isinstance(value, list):
        return [x for v in value for x in _floats(v)]
    return [value] if isinstance(value, float) else []


def test_report_content(analyzed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    summary, doc = analyzed
    by = {v["name"]: v for v in doc["variants"]}
    assert by["g5"]["servedBy"].startswith("fmbench-k8s 0.1.0 simulator, profile g5.2xlarge (illustrative")
    assert by["mine"]["servedBy"] == "openai-chat endpoint http://vllm:8000/v1"
    assert doc["provenance"]["tool"] == "fmbench-k8s 0.1.0" and doc["provenance"]["host"] == platform.node()
    assert by["g5"]["price"]["source"] == "builtin:fmbench-2025-04-11"
    assert by["g6e"]["throughputRpmPerInstance"] == pytest.approx(by["g6e"]["throughputRpmAtSlo"] / 2)
    assert by["haiku"]["price"]["model"] == "per-token" and by["haiku"]["instancesNeeded"] == 1
    assert by["mine"]["costPerHour"] is None and by["mine"]["reason"].startswith("cost unknown")
    assert by["mine"]["latencyAtSloSeconds"] is not None
    assert not by["slow"]["meetsSlo"] and by["slow"]["reason"].startswith("p95 e2e 8.")
    assert by["slow"]["reason"].endswith("> 3 s even at the lowest level 1")
    # g5 cannot be judged at 1 and 4 (too few requests) and is too slow at 16
    assert not by["g5"]["meetsSlo"]
    assert re.fullmatch(r"p95 e2e 3\.\d+ s > 3 s at level 16; levels 1, 4 had too few samples \(need ≥ 72 .*\)",
                        by["g5"]["reason"])  # fmt: skip
    rec = doc["recommendation"]
    candidates = [v for v in doc["variants"] if v["meetsSlo"] and v["costPerHour"] is not None]
    assert rec["variant"] == min(candidates, key=lambda v: v["costPerHour"])["name"]
    assert summary["recommendation"] == rec
    assert set(summary["recommendation"]) >= {"variant", "instanceType", "instances", "costPerHour",
                                              "costPer1kRequests", "latencySeconds"}  # fmt: skip
    assert summary["reportUri"].endswith("report.html") and summary["reportJsonUri"].endswith("report.json")
    g5 = summary["variants"][0]
    assert (g5["name"], g5["instanceType"], g5["stages"]) == ("g5", "g5.2xlarge", 4)
    assert len(json.dumps(summary)) < 4096  # fits a termination message
    assert doc["serverMetrics"] == {
        "collected": False, "url": None, "stages": [],
        "reason": "server metrics not collected: no Prometheus URL given "
        "(spec.prometheus.url or analyze --prometheus-url)",
    }  # fmt: skip
    view = doc["fmbenchView"]
    assert view["requestsPerMinute"] == [1, 10, 100, 600, 1000, 10000]


def test_html_is_self_contained_with_every_plot_inline(run_dir: Path, analyzed: Any) -> None:
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert sorted(name for name, _ in images) == sorted(PLOTS)
    assert all(len(data) > 1000 for _, data in images)
    assert "<style>" in html and not re.search(r'(src|href)="(https?:|/|plots/)', html)
    for name in PLOTS:
        assert (run_dir / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_markdown_and_csvs(run_dir: Path, analyzed: Any) -> None:
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# demo (run r1)") and "](plots/heatmap.png)" in md
    # where the numbers came from, in both renderings
    provenance = f"analysed by fmbench-k8s 0.1.0 (Python {platform.python_version()}) on {platform.node()}"
    assert "## Provenance" in md and provenance in md and "- mine: openai-chat endpoint http://vllm:8000/v1" in md
    html = (run_dir / "report.html").read_text()
    assert "<h2>Provenance</h2>" in html and provenance in html
    stages = list(csv.DictReader(io.StringIO((run_dir / "stages.csv").read_text())))
    assert {"variant", "stage", "throughputRpm", "e2e_p95", "ttft_p50", "sloCiLow"} <= set(stages[0])
    assert len(stages) == sum(len(v.levels) for v in VARIANTS)
    variants = list(csv.DictReader(io.StringIO((run_dir / "variants.csv").read_text())))
    assert [r["name"] for r in variants] == ["g5", "g6e", "haiku", "mine", "slow"]
    assert {r["name"]: r["servedBy"] for r in variants}["mine"] == "openai-chat endpoint http://vllm:8000/v1"


def test_client_health_says_not_recorded_for_runs_written_before_it(run_dir: Path, analyzed: Any) -> None:
    md = (run_dir / "report.md").read_text()
    section = md.split("## Client health", 1)[1].split("##", 1)[0]
    assert "kept up" in section and "not recorded" in section  # the synthetic run's stages have no client figures
    doc = load_report(LocalStorage(run_dir))
    assert all(s["client"] is None for v in doc["variants"] for s in v["stages"])


def test_output_elsewhere_without_plots_and_partial(run_dir: Path, tmp_path: Path) -> None:
    out = LocalStorage(tmp_path / "out")
    summary = analyze_run(SPEC, LocalStorage(run_dir), benchmark="demo", run_id="r2", plots=False, partial=True,
                          output=out, notes=["from the runner"])  # fmt: skip
    doc = load_report(out)
    assert doc["partial"] and summary.doc()["partial"]
    assert doc["notes"][:2] == ["from the runner", "the run did not finish: this report covers the stages that ran"]
    assert not (tmp_path / "out" / "plots").exists()
    assert "data:image/png" not in (tmp_path / "out" / "report.html").read_text()
    assert summary.doc()["reportUri"] == str(tmp_path / "out" / "report.html")


def test_missing_stage_file_is_inferred_and_noted(tmp_path: Path) -> None:
    table, stages = synthesize_table(VARIANTS[:1], stage_s=30, warmup_s=5, drain_s=30)
    storage = LocalStorage(tmp_path)
    write_run(storage, table, stages)
    (tmp_path / "stages" / "g5.json").unlink()
    spec = SPEC.model_copy(update={"variants": SPEC.variants[:1]})
    analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)
    doc = load_report(storage)
    assert any("stages/g5.json is missing" in n for n in doc["notes"])
    assert all("inferred" in s["notes"][0] for s in doc["variants"][0]["stages"])


def test_stages_without_records_and_records_without_spec(tmp_path: Path) -> None:
    table, stages = synthesize_table([VARIANTS[0], SyntheticVariant("other", levels=(1,))], stage_s=20)
    storage = LocalStorage(tmp_path)
    write_run(storage, table, stages)
    extra = StageInfo(variant="g5", stage=9, target_concurrency=64, start=1, steady_start=2, steady_end=3, end=4,
                      workers=1)  # fmt: skip
    storage.write_bytes("stages/g5.json", json.dumps([s.model_dump() for s in [*stages[:4], extra]]).encode())
    spec = SPEC.model_copy(update={"variants": SPEC.variants[:1]})
    analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)
    doc = load_report(storage)
    assert any("not in the spec were ignored: other" in n for n in doc["notes"])
    last = doc["variants"][0]["stages"][-1]
    assert (last["stage"], last["requests"], last["sloVerdict"]) == (9, 0, "no-requests")


def test_accounting_violation_fails_the_analysis(tmp_path: Path) -> None:
    table, stages = synthesize_table(VARIANTS[:1], stage_s=20)
    storage = LocalStorage(tmp_path)
    write_run(storage, table, stages)
    write_run(storage.child("dup"), table.slice(0, 3), [])  # the same requests again, in another shard
    (tmp_path / "dup" / "records" / "g5" / "000-w0-00000.parquet").rename(
        tmp_path / "records" / "g5" / "000-w9-00000.parquet"
    )
    spec = SPEC.model_copy(update={"variants": SPEC.variants[:1]})
    with pytest.raises(AccountingError, match="duplicate record"):
        analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)


def test_unpriceable_instance_type_still_gets_a_report(tmp_path: Path) -> None:
    table, stages = synthesize_table([SyntheticVariant("x", levels=(1,))], stage_s=20)
    storage = LocalStorage(tmp_path)
    write_run(storage, table, stages)
    spec = SPEC.model_copy(
        update={"variants": [SPEC.variants[0].model_copy(update={"name": "x", "instance_type": "x9.huge"})]}
    )
    summary = analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)
    reason = summary.variants[0].reason or ""
    assert "'x9.huge'" in reason and "pricePerHour" in reason
    assert summary.recommendation is None


def test_schema_rejects_a_broken_report(analyzed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, doc = analyzed
    broken = copy.deepcopy(doc)
    broken["variants"][0]["stages"][0]["e2e"]["p95"] = "fast"
    for invalid in (broken, missing := {k: v for k, v in doc.items() if k != "recommendation"}):
        with pytest.raises(ValueError, match=r"not a valid report\.json"):
            parse_report(invalid)
        with pytest.raises(jsonschema.ValidationError):  # the shipped schema says the same
            jsonschema.Draft202012Validator(report_schema()).validate(invalid)
    assert "recommendation" not in missing


def test_the_shipped_schema_is_generated_from_the_contract() -> None:
    shipped = REPO / "analysis" / "data" / "report_schema.json"
    assert shipped.read_text() == render_schema(), "analysis/data/report_schema.json is stale: run `make docs`"


def test_unreachable_prometheus_is_reported_not_raised() -> None:
    info = StageInfo(variant="v", stage=0, start=0, steady_start=1, steady_end=2, end=3, workers=1)
    url = f"http://127.0.0.1:{free_port()}"
    got = collect_server_metrics(url, [info], benchmark="b", timeout_s=2)
    assert not got["collected"] and got["url"] == url
    assert got["reason"].startswith(f"server metrics not collected: cannot reach {url}")


def test_selector_escapes_label_values() -> None:
    info = StageInfo(variant='a"b', stage=3, start=0, steady_start=1, steady_end=2, end=3, workers=1)
    assert selector("client", {}, benchmark="x\\y", info=info) == '{benchmark="x\\\\y",variant="a\\"b",stage="3"}'


def test_rows_in_another_stages_shard_are_still_counted_once(tmp_path: Path) -> None:
    table, stages = synthesize_table([SyntheticVariant("g5", levels=(1, 2))], stage_s=20)
    storage = LocalStorage(tmp_path)
    write_run(storage, table, stages)
    spec = SPEC.model_copy(update={"variants": SPEC.variants[:1]})
    analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)
    expected = [(s["stage"], s["requests"]) for s in load_report(storage)["variants"][0]["stages"]]
    # move one stage-0 shard under a stage-1 name: its rows must still land in stage 0
    (tmp_path / "records" / "g5" / "000-w1-00000.parquet").rename(tmp_path / "records" / "g5" / "001-w7-00000.parquet")
    analyze_run(spec, storage, benchmark="demo", run_id="r", plots=False)
    assert [(s["stage"], s["requests"]) for s in load_report(storage)["variants"][0]["stages"]] == expected


def test_the_termination_summary_fits_4_kib_for_the_most_variants_a_spec_allows() -> None:
    """The operator reads the analysis summary from a termination message, which the kubelet cuts
    at 4096 bytes: with 32 variants of 40-character names and long reasons it still parses, and
    keeps the recommendation and every variant's c*."""
    names = [f"{i:02d}-" + "v" * 37 for i in range(32)]
    rec = Recommendation(
        variant=names[3], model="org/m", instance_type="g6e.2xlarge", instances=3, cost_per_hour=6.726,
        cost_per_1k_requests=0.0623,
        cost_per_1m_output_tokens=1.2, latency_seconds=1.4, max_concurrency_meeting_slo=19.0, lower_bound=True,
        instances_interval=InstancesInterval(low=None, high=4, confidence=0.95), pricing="instance",
    )  # fmt: skip
    full = Summary(
        benchmark="b" * 63, run_id="20261201-120000-abcdef", partial=False,
        report_uri="s3://bucket/" + "p" * 200 + "/report.html", report_json_uri="s3://bucket/" + "p" * 200 + "/r.json",
        recommendation=rec,
        variants=[
            VariantSummary(
                name=n, model="org/m", instance_type="g6e.2xlarge", meets_slo=i % 2 == 0, stages=12,
                max_concurrency_meeting_slo=16.0 + i, capacity_lower_bound=i == 3, throughput_rpm_at_slo=900.0,
                latency_at_slo_seconds=1.2, instances_needed=3, cost_per_hour=6.7, cost_per_1k_requests=0.06,
                reason="x" * 199 + "…",
            )
            for i, n in enumerate(names)
        ],
        notes=["n" * 199 + "…"] * 5,
    )  # fmt: skip
    text = full.termination_message()
    assert len(text.encode()) <= 4096
    parsed = OperatorSummary.parse(text)
    assert parsed.recommendation == rec
    assert [v.max_concurrency_meeting_slo for v in parsed.variants] == [16.0 + i for i in range(32)]
    assert [v.capacity_lower_bound for v in parsed.variants] == [i == 3 for i in range(32)]
    # A small summary keeps everything the operator reads, reasons and notes included.
    small = full.model_copy(update={"variants": full.variants[:2], "notes": ["a note"]})
    kept = OperatorSummary.parse(small.termination_message())
    assert kept.notes == ["a note"] and kept.variants[0].reason == full.variants[0].reason
    with pytest.raises(ValueError, match=r"recommendation.instances: Input should be greater than or equal to 1"):
        OperatorSummary.parse(text.replace('"instances":3', '"instances":0'))


def test_failed_requests_are_listed_by_reason_in_both_renderings(tmp_path: Path) -> None:
    table, stages = synthesize_table(
        [SyntheticVariant("g5", levels=(4,), error_rate=0.1, output_tokens=16)], stage_s=20, warmup_s=2, drain_s=5
    )
    write_run(LocalStorage(tmp_path), table, stages)
    spec = SPEC.model_copy(update={"variants": SPEC.variants[:1]})
    analyze_run(spec, LocalStorage(tmp_path), benchmark="errs", run_id="r", plots=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    stage = doc["variants"][0]["stages"][0]
    reasons = stage["errorsByReason"]
    assert sum(reasons.values()) == stage["errors"] > 0 and len(reasons) > 1
    md = (tmp_path / "report.md").read_text()
    errors = md.split("## Errors by reason", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in errors.splitlines() if line.startswith("| g5 | 0 | 4 | ")]
    expected = sorted(reasons.items(), key=lambda kv: -kv[1])
    assert [row.split(" | ")[3:5] for row in rows] == [[r, str(n)] for r, n in expected]  # most frequent first
    assert rows[0].endswith(f"| {expected[0][1] / stage['requests']:.2%} |")
    assert "<h2>Errors by reason</h2>" in (tmp_path / "report.html").read_text()
