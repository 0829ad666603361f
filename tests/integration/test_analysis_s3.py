"""analyze_run reading records from and writing the report to S3, through a real moto server."""

from __future__ import annotations

import json

import boto3
import pytest

from fmbench_k8s.analysis.compare import compare
from fmbench_k8s.analysis.plots import PLOTS
from fmbench_k8s.analysis.run import analyze_run, load_report
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.contract.report import parse_report
from fmbench_k8s.storage import open_storage

pytestmark = pytest.mark.integration

SPEC = BenchmarkSpec.model_validate({
    "variants": [
        {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
        {"name": "inf2", "instanceType": "inf2.8xlarge", "engine": "simulator"},
    ],
    "workload": {"requestsPerMinute": 300, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 32}},
    "slo": {"latency": {"metric": "ttft", "percentile": 90, "maxSeconds": 0.5}},
})  # fmt: skip


def test_s3_round_trip(s3_endpoint: str) -> None:
    run = open_storage("s3://results/fmbench/ns/demo/run-1", endpoint_url=s3_endpoint, region="us-east-1")
    table, stages = synthesize_table(
        [SyntheticVariant("g5", levels=(2, 8), ttft_s=0.1), SyntheticVariant("inf2", levels=(2, 8), ttft_s=0.3)],
        stage_s=40, warmup_s=5,
    )  # fmt: skip
    written = write_run(run, table, stages)

    summary = analyze_run(SPEC, run, benchmark="demo", run_id="run-1")

    assert summary.doc()["reportUri"] == "s3://results/fmbench/ns/demo/run-1/report.html"
    assert summary.doc()["reportJsonUri"] == "s3://results/fmbench/ns/demo/run-1/report.json"
    keys = set(run.list_keys())
    assert set(written) <= keys
    assert {"report.json", "report.html", "report.md", "stages.csv", "variants.csv"} <= keys
    assert {f"plots/{name}" for name in PLOTS} <= keys

    doc = load_report(run)
    parse_report(doc)
    assert [v["name"] for v in doc["variants"]] == ["g5", "inf2"]
    assert sum(s["requests"] for v in doc["variants"] for s in v["stages"]) == table.num_rows
    assert doc["recommendation"] == summary.doc()["recommendation"] and doc["recommendation"]["variant"] == "g5"

    raw = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    html = raw.get_object(Bucket="results", Key="fmbench/ns/demo/run-1/report.html")["Body"].read().decode()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert json.loads(raw.get_object(Bucket="results", Key="fmbench/ns/demo/run-1/report.json")["Body"].read()) == doc

    # a second analysis written to another prefix, compared with the first
    other = open_storage("s3://results/reanalysis", endpoint_url=s3_endpoint, region="us-east-1")
    analyze_run(SPEC, run, benchmark="demo", run_id="run-1b", output=other, plots=False)
    result = compare(parse_report(doc), parse_report(load_report(other)))
    assert not result.regressions and {r.verdict for r in result.rows} == {"same"}
