"""Server metrics from a real Prometheus (Debian's `prometheus`) scraping a test exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fmbench_k8s.analysis.prometheus import GAUGES, HIT_RATE_SERIES, INCREASES, QUANTILES, collect_server_metrics
from fmbench_k8s.contract.records import StageInfo
from fmbench_k8s.local.processes import free_port

pytestmark = pytest.mark.integration

LABELS = {"benchmark": "bench", "variant": "g5"}


def poll(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Exporter:
    running: Gauge
    waiting: Gauge
    cache: Gauge
    e2e: Histogram
    prefix_queries: Counter
    prefix_hits: Counter
    port: int


@dataclass
class Prom:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=5) as resp:
                result: list[dict[str, Any]] = json.loads(resp.read())["data"]["result"]
                return result
        except OSError:
            return []

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    names = list(LABELS)
    running = Gauge("vllm:num_requests_running", "running", names, registry=registry)
    waiting = Gauge("vllm:num_requests_waiting", "waiting", names, registry=registry)
    cache = Gauge("vllm:gpu_cache_usage_perc", "kv cache", names, registry=registry)  # vLLM < 0.10's name
    # another variant served by SGLang, under SGLang's names (tests/engines/test_sglang_args.py)
    sglang = {"benchmark": "bench", "variant": "sg"}
    Gauge("sglang:num_running_reqs", "running", names, registry=registry).labels(**sglang).set(7)
    Gauge("sglang:token_usage", "kv cache", names, registry=registry).labels(**sglang).set(0.25)
    Gauge("sglang:cache_hit_rate", "prefix cache", names, registry=registry).labels(**sglang).set(0.6)
    # vLLM's prefix cache: tokens looked up and found (their ratio over the window is the hit rate)
    queries = Counter("vllm:prefix_cache_queries", "looked up", names, registry=registry)
    hits = Counter("vllm:prefix_cache_hits", "found", names, registry=registry)
    queries.labels(**LABELS).inc(0)
    hits.labels(**LABELS).inc(0)
    e2e = Histogram("fmbench_request_e2e_seconds", "e2e", [*names, "stage"], buckets=(0.5, 1.0, 2.0, 5.0),
                    registry=registry)  # fmt: skip
    running.labels(**LABELS).set(3)
    waiting.labels(**LABELS).set(1)
    cache.labels(**LABELS).set(0.5)
    for _ in range(100):
        e2e.labels(**LABELS, stage="0").observe(0.7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(running, waiting, cache, e2e, queries, hits, port)
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def prometheus(tmp_path: Path, exporter: Exporter) -> Iterator[Prom]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is not installed: apt-get install -y prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: exporter\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = Prom(f"http://127.0.0.1:{port}")
    try:
        poll("the exporter to be scraped", lambda: prom.value('up{job="exporter"}') == 1.0)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_server_metrics_over_a_steady_window(prometheus: Prom, exporter: Exporter) -> None:
    # prometheus_client may serve vllm:x as vllm_x (OpenMetrics escaping); the analysis reads both
    running = '{__name__=~"vllm[:_]num_requests_running"}'
    start = time.time()
    # at least one scrape inside the window with the first values, then change them
    poll("a scrape inside the window", lambda: (prometheus.value(f"timestamp({running})") or 0) > start)
    exporter.running.labels(**LABELS).set(5)
    exporter.prefix_queries.labels(**LABELS).inc(1000)
    exporter.prefix_hits.labels(**LABELS).inc(750)
    for _ in range(100):
        exporter.e2e.labels(**LABELS, stage="0").observe(0.7)
    poll("the new values to be scraped", lambda: prometheus.value(running) == 5.0
         and prometheus.value("fmbench_request_e2e_seconds_count") == 200.0)  # fmt: skip
    end = time.time()
    stages = [
        StageInfo(variant="g5", stage=0, start=start, steady_start=start, steady_end=end, end=end, workers=1),
        StageInfo(variant="ghost", stage=0, start=start, steady_start=start, steady_end=end, end=end, workers=1),
        StageInfo(variant="sg", stage=0, start=start, steady_start=start, steady_end=end, end=end, workers=1),
    ]

    got = collect_server_metrics(prometheus.url, stages, benchmark="bench")

    assert got["collected"] and got["reason"] is None
    g5, ghost, sg = got["stages"]
    m = g5["metrics"]
    assert 3.0 <= m["running"]["avg"] < 5.0 and m["running"]["max"] == 5.0
    assert m["running"]["series"] in ("vllm:num_requests_running", "vllm_num_requests_running")
    assert {k: m["waiting"][k] for k in ("avg", "max")} == {"avg": 1.0, "max": 1.0}
    assert {k: m["kvCacheUsage"][k] for k in ("avg", "max")} == {"avg": 0.5, "max": 0.5}
    assert m["kvCacheUsage"]["series"].endswith("gpu_cache_usage_perc")  # read under its older name
    # every observation is in the (0.5, 1.0] bucket: p95 interpolates to 0.5 + 0.95 × 0.5
    assert m["clientE2eP95"]["value"] == pytest.approx(0.975)
    # both counters moved in the same scrape: the ratio of their increases is exact
    assert m["prefixCacheHitRate"]["value"] == pytest.approx(0.75)
    assert m["prefixCacheHitRate"]["series"] in HIT_RATE_SERIES
    assert g5["absent"] == ["gpuUtilization", "neuronCoreUtilization", *(i.key for i in INCREASES)]
    # the same quantities under SGLang's names land under the same keys, saying which series they are
    assert sg["metrics"]["running"]["max"] == 7.0 and sg["metrics"]["running"]["series"].endswith("num_running_reqs")
    assert sg["metrics"]["kvCacheUsage"]["max"] == 0.25 and "waiting" in sg["absent"]
    assert sg["metrics"]["prefixCacheHitRate"]["avg"] == 0.6
    assert ghost["metrics"] == {}
    assert ghost["absent"] == [g.key for g in GAUGES] + [i.key for i in INCREASES] + [q.key for q in QUANTILES]
