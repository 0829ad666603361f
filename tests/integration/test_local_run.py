"""`fmbench-k8s run` end to end: real simulators, Locust master + workers, Prometheus, analysis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.corpus import REPO
from tests.s3 import credentials_env

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "fmbench-k8s")


def _spec(tmp_path: Path, **load: Any) -> Path:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["metadata"]["name"] = "mini"
    doc["spec"]["variants"] = doc["spec"]["variants"][:2]
    doc["spec"]["workload"] = {"requestsPerMinute": 600, "promptTokens": {"mean": 64}, "outputTokens": {"mean": 8}}
    # p90 needs 35 requests per stage for its confidence interval; these levels get them in ~2 s.
    doc["spec"]["slo"] = {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 1.0}}
    doc["spec"]["load"] = {
        "mode": "sweep", "concurrency": {"levels": [4, 16]}, "warmup": "500ms", "stageDuration": "3s",
        "drain": "3s", "minRequestsPerStage": 35, "workers": 2, **load,
    }  # fmt: skip
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600, check=False, **kw)


def _only_run_dir(output: Path) -> Path:
    runs = list((output / "local" / "mini").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_local_run_writes_the_report_and_prints_the_recommendation(tmp_path: Path) -> None:
    done = _run(["run", str(_spec(tmp_path)), "--output", str(tmp_path / "out")])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = _only_run_dir(tmp_path / "out")
    report = json.loads((run / "report.json").read_text())
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 5
    assert sorted(p.name for p in (run / "plots").iterdir())
    assert (run / "spec.yaml").exists() and list((run / "records").rglob("*.parquet"))
    by_name = {v["name"]: v for v in report["variants"]}
    assert set(by_name) == {"g5-sim", "g6e-sim"}
    for v in by_name.values():
        assert [s["target"] for s in v["stages"]] == [4, 16]
        assert all(s["requests"] > 0 and s["errors"] == 0 for s in v["stages"])
    rec = report["recommendation"]
    assert rec is not None, report["notes"]
    chosen = by_name[rec["variant"]]
    assert rec["instances"] == chosen["instancesNeeded"]
    assert rec["costPerHour"] == pytest.approx(chosen["costPerHour"])
    others = [v["costPerHour"] for v in by_name.values() if v["meetsSlo"]]
    assert rec["costPerHour"] == pytest.approx(min(others))
    assert "recommendation:" in done.stdout and "report.html" in done.stdout
    assert report["serverMetrics"]["collected"] is True, report["serverMetrics"]


def test_an_endpoint_variant_uses_a_running_openai_server(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [CLI, "simulate", "--port", "0", "--profile", "g6e.2xlarge", "--model", "my-model"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://"), url
        spec = yaml.safe_load(_spec(tmp_path).read_text())
        spec["spec"]["variants"] = [
            {"name": "ext", "endpoint": {"api": "openai-chat", "url": f"{url}/v1", "model": "my-model"},
             "instanceType": "g6e.2xlarge"},
        ]  # fmt: skip
        spec["spec"]["load"]["concurrency"] = {"levels": [4]}
        path = tmp_path / "ext.yaml"
        path.write_text(yaml.safe_dump(spec))
        done = _run(["run", str(path), "--output", str(tmp_path / "out"), "--no-plots", "--no-prometheus"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        report = json.loads((_only_run_dir(tmp_path / "out") / "report.json").read_text())
        stage = report["variants"][0]["stages"][0]
        assert stage["requests"] > 0 and stage["ok"] == stage["requests"] - stage["incomplete"]
    finally:
        sim.terminate()
        sim.wait(10)


def test_output_to_s3(tmp_path: Path, s3_endpoint: str) -> None:
    env = {**credentials_env(), "AWS_ENDPOINT_URL_S3": s3_endpoint}
    done = _run(["run", str(_spec(tmp_path, concurrency={"levels": [4]})), "--output", "s3://results/bench",
                 "--no-plots", "--no-prometheus"], env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="bench/local/mini/")["Contents"]]
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"report.json", "report.html", "report.md", "spec.yaml"} <= names
    assert any("/records/g5-sim/" in k and k.endswith(".parquet") for k in keys)


def test_interrupt_keeps_records_and_writes_a_partial_report(tmp_path: Path) -> None:
    spec = _spec(tmp_path, stageDuration="30s", concurrency={"levels": [4, 8]})
    out = tmp_path / "out"
    proc = subprocess.Popen([CLI, "run", str(spec), "--output", str(out), "--no-plots"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.rglob("records/g5-sim/*.parquet")):  # load is running and flushing
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    run = _only_run_dir(out)
    report = json.loads((run / "report.json").read_text())
    assert report["partial"] is True
    assert "interrupted" in output
    stage = report["variants"][0]["stages"][0]
    assert stage["requests"] > 0
    assert stage["requests"] == stage["ok"] + stage["errors"] + stage["incomplete"]


def test_cluster_only_engines_are_refused_up_front(tmp_path: Path) -> None:
    done = _run(["run", str(REPO / "crds/samples/vllm-gpu.yaml"), "--output", str(tmp_path)])
    assert done.returncode == 2
    assert "spec.variants[0].engine: 'vllm' (g5-vllm) needs a Kubernetes cluster" in done.stderr
    assert "kubectl apply" in done.stderr and "endpoint" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is started or written for a refused spec"


def test_dry_run_prints_the_plan_without_load(tmp_path: Path) -> None:
    done = _run(["run", str(REPO / "examples/quickstart.yaml"), "--dry-run", "--output", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert "g6e-sim" in done.stdout and "stages" in done.stdout and "min" in done.stdout
    assert not list(tmp_path.iterdir())


def test_bad_output_uri_is_a_clear_error(tmp_path: Path) -> None:
    done = _run(["run", str(_spec(tmp_path)), "--output", "gs://bucket/x"])
    assert done.returncode == 2 and "--output: unsupported output 'gs://bucket/x'" in done.stderr
    assert os.path.exists(tmp_path / "mini.yaml")
