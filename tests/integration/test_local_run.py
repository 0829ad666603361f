"""`fmbench-k8s run` end to end: real simulators, Locust master + workers, Prometheus, analysis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.corpus import REPO
from tests.s3 import MotoS3, credentials_env

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
    """-o json: the result alone on stdout, for scripts; the plan and the progress on stderr."""
    done = _run(["run", str(_spec(tmp_path)), "--output-dir", str(tmp_path / "out"), "-o", "json"])
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
        # the workers' own figures reach the report: they measured the server, not themselves
        for s in v["stages"]:
            c = s["client"]
            assert c["cpuPercent"] > 0 and c["rssMb"] > 0 and 0 <= c["loopLagP99Seconds"] < 1, c
    assert "<h2>Client health</h2>" in html
    rec = report["recommendation"]
    assert rec is not None, report["notes"]
    chosen = by_name[rec["variant"]]
    assert rec["instances"] == chosen["instancesNeeded"]
    assert rec["costPerHour"] == pytest.approx(chosen["costPerHour"])
    others = [v["costPerHour"] for v in by_name.values() if v["meetsSlo"]]
    assert rec["costPerHour"] == pytest.approx(min(others))
    assert json.loads(done.stdout) == json.loads((run / "summary.json").read_text())
    assert json.loads(done.stdout)["recommendation"]["variant"] == rec["variant"]
    assert "mini: 2 variants" in done.stderr and "verdict=" in done.stderr
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


def _stages_file_retries(since: float) -> int:
    """How often a local run's master (its log is in the run's temporary work directory) has
    retried writing its stages file since ``since``."""
    for log in Path(tempfile.gettempdir()).glob("fmbench-*/logs/loadgen-master-g5-sim.log"):
        if log.stat().st_mtime >= since:
            lines = log.read_text().splitlines()
            return sum("stages/g5-sim.json" in line and "retrying in" in line for line in lines)
    return 0


def test_an_s3_outage_through_the_end_of_the_load_loses_no_record(tmp_path: Path, s3_server: MotoS3) -> None:
    """S3 refuses connections from mid-load until after the load has ended: the workers keep their
    records, the master its stages file, the analysis waits; all of it lands when S3 returns."""
    env = {**credentials_env(), "AWS_ENDPOINT_URL_S3": s3_server.endpoint, "FMBENCH_STORAGE_PATIENCE_SECONDS": "300"}
    spec = _spec(tmp_path, concurrency={"levels": [4, 8]})
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["variants"] = doc["spec"]["variants"][:1]
    spec.write_text(yaml.safe_dump(doc))
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")

    def keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="out/").get("Contents", [])]

    proc = subprocess.Popen([CLI, "run", str(spec), "--output", "s3://results/out", "--no-plots", "--no-prometheus"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(k.endswith(".parquet") for k in keys()):  # the load is running and flushing
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    started = time.time()
    s3_server.down()
    # S3 stays down until the load is over and the master has backed off 1+2+4+8+16+30 s for its
    # stages file: an outage of over a minute, as long as the backoff's longest step.
    while _stages_file_retries(started) < 7:
        assert proc.poll() is None and time.monotonic() < deadline + 240, "the run finished (or failed) without S3"
        time.sleep(0.5)
    assert proc.poll() is None
    back = time.time()
    assert back - started > 60
    s3_server.up()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]

    stored = keys()
    stages_key = next(k for k in stored if k.endswith("stages/g5-sim.json"))
    written = s3.head_object(Bucket="results", Key=stages_key)["LastModified"].timestamp()
    assert written >= back - 1, "the stages file was written after S3 came back, not lost"
    # Ground truth that never went through S3: the request counts the workers sent the master.
    run_id = re.search(r"run (\S+) → s3://", output).group(1)  # type: ignore[union-attr]
    (master_log,) = Path(tempfile.gettempdir()).glob(f"fmbench-{run_id}-*/logs/loadgen-master-g5-sim.log")
    events = [json.loads(line) for line in master_log.read_text().splitlines() if line.startswith('{"event"')]
    scheduled = [e["requests"] for e in events if e["event"] == "stage_end"]
    assert len(scheduled) == 2 and min(scheduled) > 0
    rows = 0
    for key in (k for k in stored if k.endswith(".parquet")):
        body = s3.get_object(Bucket="results", Key=key)["Body"].read()
        rows += pq.read_metadata(pa.BufferReader(body)).num_rows
    assert rows == sum(scheduled), "every scheduled request is a stored record"
    report = json.loads(s3.get_object(Bucket="results", Key=next(k for k in stored if k.endswith("report.json")))[
        "Body"].read())  # fmt: skip
    assert report["partial"] is False
    assert [s["requests"] for s in report["variants"][0]["stages"]] == scheduled


def _kill_simulator_mid_stream(proc: subprocess.Popen[str], out: Path, variant: str, profile: str) -> None:
    """SIGKILL ``variant``'s simulator (``profile``) once its load is running (records are being flushed)."""
    deadline = time.monotonic() + 120
    while not list(out.rglob(f"records/{variant}/*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    # The first flush holds finished requests, so the steady window has begun; at once, before
    # it ends however slow the machine: closed-loop streams are always in flight.
    pattern = f"fmbench_k8s.simulator .*--profile {profile}"
    # -P: this run's own child only, whatever else runs on the machine
    find = ["pgrep", "-P", str(proc.pid), "-f", pattern]
    pids = subprocess.run(find, capture_output=True, text=True, check=False).stdout.split()
    assert len(pids) == 1, pids
    os.kill(int(pids[0]), signal.SIGKILL)


def _records(run: Path, variant: str) -> pa.Table:
    return pq.read_table(run / "records" / variant)


DOWN = {"truncated_stream", "connection_reset", "connection_refused"}  # what a killed server looks like


def _run_killing_g5(tmp_path: Path, variants: int, **load: Any) -> tuple[subprocess.Popen[str], str, Path]:
    """A local run whose g5 simulator is SIGKILLed mid-stream; (process, output, run directory)."""
    spec = _spec(tmp_path, stageDuration="5s", **load)
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["variants"] = doc["spec"]["variants"][:variants]
    doc["spec"]["workload"]["outputTokens"] = {"mean": 32}  # streams long enough to be cut mid-way
    doc["spec"]["slo"]["latency"]["maxSeconds"] = 3.0
    spec.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    proc = subprocess.Popen([CLI, "run", str(spec), "--output", str(out), "--no-plots", "--no-prometheus"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _kill_simulator_mid_stream(proc, out, "g5-sim", "g5.2xlarge")
    output, _ = proc.communicate(timeout=300)
    return proc, output, _only_run_dir(out)


def test_a_model_server_killed_mid_stream_is_restarted_and_its_stage_run_again(tmp_path: Path) -> None:
    proc, output, run = _run_killing_g5(tmp_path, 1, concurrency={"levels": [4]})
    assert proc.returncode == 0, output[-3000:]
    report = json.loads((run / "report.json").read_text())
    hit, again = report["variants"][0]["stages"]
    # the in-flight streams and the requests sent while it was down are errors, with their reasons
    assert hit["target"] == again["target"] == 4
    assert hit["errors"] > 0 and set(hit["errorsByReason"]) <= DOWN and "connection_refused" in hit["errorsByReason"]
    assert any("endpoint unreachable" in n for n in hit["notes"])
    assert again["errors"] == 0 and again["ok"] > 0 and again["meetsSlo"]
    assert report["variants"][0]["meetsSlo"] and report["recommendation"]["variant"] == "g5-sim"
    assert any("simulator exited (code -9) and was restarted" in n for n in report["notes"])
    rows = _records(run, "g5-sim").to_pydict()
    stage0 = [e for st, e in zip(rows["stage"], rows["error"], strict=True) if st == 0 and e is not None]
    assert len(stage0) == hit["errors"] and set(stage0) <= DOWN  # every error is a record, none dropped
    for stage in (hit, again):
        assert stage["requests"] == stage["ok"] + stage["errors"] + stage["incomplete"]


def test_with_no_endpoint_retries_a_dead_model_server_fails_its_variant_only(tmp_path: Path) -> None:
    proc, output, run = _run_killing_g5(tmp_path, 2, concurrency={"levels": [4, 8]}, endpointRetries=0)
    assert proc.returncode == 3, output[-3000:]  # the run failed (README, "Exit codes")
    assert "variant g5-sim failed: stage 0 (level 4): the endpoint stopped answering" in output
    report = json.loads((run / "report.json").read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    (hit,) = by_name["g5-sim"]["stages"]  # no further stage against a dead server
    assert hit["errors"] > 0 and set(hit["errorsByReason"]) <= DOWN
    assert not by_name["g5-sim"]["meetsSlo"]
    assert [s["target"] for s in by_name["g6e-sim"]["stages"]] == [4, 8], "the other variant still ran"
    assert report["recommendation"]["variant"] == "g6e-sim"
    assert len(_records(run, "g5-sim")) == hit["requests"]


def _peak_streams(records: pa.Table) -> int:
    """The most requests open at once (sent, not yet ended), from the records' own timestamps."""
    rows = records.to_pydict()
    events = sorted([(t, 1) for t in rows["t_sent"] if t is not None]
                    + [(t, -1) for t in rows["t_end"] if t is not None])  # fmt: skip
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_two_thousand_concurrent_streams_without_errors_or_leaks(tmp_path: Path) -> None:
    """2 workers x 1,000 streams against a simulator with 4,096 slots and 0.25 s per token (16
    tokens, ~4 s per stream: ~8k SSE events/s in all), three stages: no error, every slot busy,
    the workers' memory flat from stage to stage."""
    sim = subprocess.Popen(
        [CLI, "simulate", "--port", "0", "--model", "m", "--max-num-seqs", "4096", "--decode-base-s", "0.25",
         "--batch-slowdown", "0", "--prefill-base-s", "0.05"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
        doc = yaml.safe_load(_spec(tmp_path).read_text())
        doc["metadata"]["name"] = "streams"
        doc["spec"]["variants"] = [
            {"name": "ext", "endpoint": {"api": "openai-chat", "url": f"{url}/v1", "model": "m"}, "pricePerHour": 1.0}
        ]
        doc["spec"]["workload"] = {"requestsPerMinute": 600, "promptTokens": {"mean": 64}, "outputTokens": {"mean": 16}}
        doc["spec"]["slo"] = {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 30}}
        doc["spec"]["load"] = {"mode": "sweep", "concurrency": {"levels": [2000, 2001, 2002]}, "warmup": "5s",
                               "stageDuration": "10s", "drain": "10s", "workers": 2}  # fmt: skip
        spec = tmp_path / "streams.yaml"
        spec.write_text(yaml.safe_dump(doc))
        out = tmp_path / "out"
        done = _run(["run", str(spec), "--output", str(out), "--no-plots", "--no-prometheus"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        sim.terminate()
        sim.wait(10)
    run = next((out / "local" / "streams").iterdir())
    master_log = (run / "logs" / "loadgen-master-ext.log").read_text().splitlines()
    stages = [json.loads(line) for line in master_log if line.startswith('{"event":"stage_end"')]
    assert [s["target"] for s in stages] == [2000, 2001, 2002]
    for s in stages:
        assert s["errors"] == 0 and s["errors_by_reason"] == {}, s
        assert s["requests"] == s["ok"] + s["incomplete"] and s["requests"] >= 2 * s["target"], s
    records = pq.read_table(run / "records" / "ext")
    assert _peak_streams(records) >= 2000
    rss = [s["client_rss_mb"] for s in stages]
    assert max(rss[1:]) <= 1.2 * rss[0], f"worker memory grows stage by stage: {rss} MB"


def _run_under_load(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A run started in the background, once its load is running and flushing records."""
    spec = _spec(tmp_path, stageDuration="30s", concurrency={"levels": [4, 8]})
    out = tmp_path / "out"
    proc = subprocess.Popen([CLI, "run", str(spec), "--output-dir", str(out), "--no-plots"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.rglob("records/g5-sim/*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    return proc, out


def test_interrupt_keeps_records_and_writes_a_partial_report(tmp_path: Path) -> None:
    proc, out = _run_under_load(tmp_path)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    run = _only_run_dir(out)
    report = json.loads((run / "report.json").read_text())
    assert report["partial"] is True
    assert "interrupted: ending the current stage and writing a partial report; Ctrl-C again to abort" in output
    assert "not run: g6e-sim; the answer covers only the others" in output
    stage = report["variants"][0]["stages"][0]
    assert stage["requests"] > 0
    assert stage["requests"] == stage["ok"] + stage["errors"] + stage["incomplete"]
    # cut short, the stage says nothing about its level: not a failure that would lower c*
    assert (stage["sloOutcome"], stage["sloVerdict"]) == ("inconclusive", "interrupted")
    search = json.loads((run / "stages" / "g5-sim.search.json").read_text())
    assert search["interrupted"] and [t["verdict"] for t in search["levels"]] == ["interrupted"]


def test_a_second_interrupt_aborts_at_once_without_a_traceback_and_stops_every_process(tmp_path: Path) -> None:
    proc, _ = _run_under_load(tmp_path)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                                check=False).stdout.split()]  # fmt: skip
    assert children, "the run has its simulators and load generators running"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-3000:]
    assert "run: aborted" in output and "Traceback" not in output, output[-3000:]
    alive = []
    for pid in children:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    assert not alive, f"processes of the run left behind: {alive}"


def test_cluster_only_engines_are_refused_up_front(tmp_path: Path) -> None:
    done = _run(["run", str(REPO / "crds/samples/vllm-gpu.yaml"), "--output", str(tmp_path)])
    assert done.returncode == 1  # invalid input
    assert "spec.variants[0].engine: 'vllm' (g5-vllm) needs a Kubernetes cluster" in done.stderr
    assert "kubectl apply" in done.stderr and "endpoint" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is started or written for a refused spec"


def test_dry_run_prints_the_plan_without_load(tmp_path: Path) -> None:
    done = _run(["run", str(REPO / "examples/quickstart.yaml"), "--dry-run", "--output", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert "g6e-sim" in done.stdout and "stages" in done.stdout and "min" in done.stdout
    assert not list(tmp_path.iterdir())


def test_o_is_the_result_format_and_a_directory_there_still_works(tmp_path: Path) -> None:
    spec = str(REPO / "examples/quickstart.yaml")
    done = _run(["run", spec, "-o", "out", "--output-dir", str(tmp_path), "--dry-run"])
    assert (
        done.returncode == 2
        and done.stderr == "run: -o out: give table, json or yaml (the directory is --output-dir)\n"
    )
    done = _run(["run", spec, "-o", str(tmp_path / "legacy"), "--dry-run"])  # as before: a directory
    assert done.returncode == 0 and "g6e-sim" in done.stdout, done.stderr


def test_the_spec_may_come_from_stdin_or_f_and_must_come_once(tmp_path: Path) -> None:
    text = (REPO / "examples/quickstart.yaml").read_text()
    done = _run(["run", "-f", "-", "--dry-run", "--output", str(tmp_path)], input=text)
    assert done.returncode == 0 and "g6e-sim" in done.stdout, done.stderr
    for argv in (["run", "--dry-run"], ["run", "a.yaml", "-f", "b.yaml", "--dry-run"]):
        done = _run(argv)
        assert done.returncode == 2 and done.stderr.startswith("run: give the Benchmark file once"), done.stderr


def test_bad_output_uri_is_a_clear_error(tmp_path: Path) -> None:
    done = _run(["run", str(_spec(tmp_path)), "--output", "gs://bucket/x"])
    assert done.returncode == 2 and "--output-dir: unsupported output 'gs://bucket/x'" in done.stderr
    assert os.path.exists(tmp_path / "mini.yaml")
    (tmp_path / "afile").write_text("")
    done = _run(["run", str(_spec(tmp_path)), "--output", str(tmp_path / "afile")])
    assert (
        done.returncode == 2
        and done.stderr
        == f"--output-dir: {tmp_path / 'afile'} is a file; give a directory (it is created if missing) or s3://BUCKET/PREFIX\n"
    )


def test_s3_that_cannot_be_written_is_one_line_before_anything_starts(tmp_path: Path, s3_server: MotoS3) -> None:
    """No credentials, or a bucket that does not exist: the first write (the run's spec.yaml) fails
    with S3's reason in one line, and no model server or load generator was started."""
    spec = str(_spec(tmp_path))
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    nowhere = {**bare, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_S3": s3_server.endpoint}  # fmt: skip
    done = _run(["run", spec, "--output", "s3://results/x"], env=nowhere)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("run: S3: no AWS credentials found; set AWS_PROFILE") and done.stderr.count("\n") == 1
    missing = {**bare, **credentials_env(), "AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    done = _run(["run", spec, "--output", "s3://no-such-bucket/x"], env=missing)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("run: S3: NoSuchBucket: ") and done.stderr.count("\n") == 1, done.stderr
    assert "→" not in done.stdout  # the run never began ("run ID → URI" comes after the first write)
