"""Every dashboard panel fed by what a benchmark itself exports (the load workers' fmbench_* and
the model server's vLLM metrics) returns data for a real local run.

The run is `fmbench-k8s run` with Prometheus scraping the simulators and workers; afterwards a
Prometheus is started on that run's TSDB and every such panel query is evaluated at the end of
the run. Panels fed by cluster-only exporters (kube-state-metrics, DCGM, neuron-monitor, the
chart's price recording rules) are listed explicitly, not skipped silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmbench_k8s.local.prometheus import start_prometheus
from tests.chart.chartkit import dashboard_queries, load_dashboard, metric_names, raw_queries, substitute
from tests.chart.conftest import require_tool
from tests.corpus import REPO

pytestmark = pytest.mark.integration
DASHBOARDS = REPO / "charts" / "fmbench-k8s" / "dashboards"
# What a run itself exports; a panel may also read SGLang's or TGI's names beside vLLM's (`or`), which the
# simulator does not serve: the vLLM side must then return the data.
LOCAL_METRICS = ("fmbench_", "vllm:", "vllm_", "sglang:", "tgi_")
# Panels whose series come from exporters a local run does not have.
CLUSTER_ONLY = ("kube_", "DCGM_", "neuron", "fmbench:instance_price", "fmbench_benchmark_", "node_")


def _query(url: str, expr: str, at: float) -> list[Any]:
    data = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/query", data=data), timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


# Grafana's $__rate_interval is max(4 × scrape interval, $__interval + scrape interval): 1m for a
# 15 s scrape; the run's own Prometheus scrapes every second, so 30 s is already generous, and the
# stages need only outlast it.
RATE_INTERVAL = {"__rate_interval": "30s"}
# The same run closed-loop (concurrency panels) and open-loop (offered-rate panel), side by side.
LOADS: dict[str, dict[str, Any]] = {
    "closed": {"concurrency": {"levels": [8]}},
    "open": {"arrival": "poisson", "rate": {"levels": [6]}},
}


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("prometheus", "Debian package prometheus")
    tmp = tmp_path_factory.mktemp("dashboards")
    cli = str(Path(sys.executable).parent / "fmbench-k8s")
    procs = {}
    for kind, load in LOADS.items():
        doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
        doc["metadata"]["name"] = f"dash-{kind}"
        doc["spec"]["variants"] = doc["spec"]["variants"][:1]
        doc["spec"]["workload"]["outputTokens"] = {"mean": 8}
        doc["spec"]["load"] = {"mode": "fixed", "warmup": "1s", "stageDuration": "40s", "drain": "3s", "workers": 2,
                               **load}  # fmt: skip
        spec = tmp / f"{kind}.yaml"
        spec.write_text(yaml.safe_dump(doc))
        procs[kind] = subprocess.Popen([cli, "run", str(spec), "--output-dir", str(tmp / kind), "--no-plots"],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    runs = {}
    for kind, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        (runs[kind],) = (tmp / kind / "local" / f"dash-{kind}").iterdir()
    return runs


def _local_queries() -> tuple[list[tuple[str, str, str]], list[str]]:
    """(dashboard, panel, query) a local run can feed, and the titles of the cluster-only panels."""
    local, cluster_only = [], []
    for path in sorted(DASHBOARDS.glob("*.json")):
        titled = raw_queries(load_dashboard(path))
        for (title, _), expr in zip(titled, dashboard_queries(path, RATE_INTERVAL), strict=True):
            names = metric_names(expr)
            if names and all(n.startswith(LOCAL_METRICS) for n in names):
                local.append((path.stem, title, expr))
            else:
                assert any(n.startswith(CLUSTER_ONLY) for n in names), (path.stem, title, names)
                cluster_only.append(f"{path.stem}: {title}")
    return local, cluster_only


def test_the_split_between_local_and_cluster_only_panels_is_deliberate() -> None:
    local, cluster_only = _local_queries()
    dashboards = {d for d, _, _ in local}
    assert {"live-run", "model-server"} <= dashboards
    assert all(not t.startswith("live-run") for t in cluster_only), "every live-run panel is fed by the run itself"


def test_every_panel_fed_by_the_run_shows_data(finished_runs: dict[str, Path]) -> None:
    report = json.loads((finished_runs["closed"] / "report.json").read_text())
    assert report["serverMetrics"]["collected"] is True, report["serverMetrics"]
    # The run's own Prometheus labels the model server's series with benchmark and variant, so the
    # report finds them (docs/metrics.md, "Server metrics").
    served = report["serverMetrics"]["stages"][0]["metrics"]
    for key in ("running", "kvCacheUsage", "queueTimeMean", "generationTokens"):
        assert key in served, (key, report["serverMetrics"]["stages"][0]["absent"])
    assert served["running"]["max"] == 8  # the stage's concurrency, seen by the server
    binary = require_tool("prometheus", "Debian package prometheus")
    queries = _local_queries()[0]
    answers: dict[str, list[list[Any]]] = {}
    for kind, run in finished_runs.items():
        (stage,) = json.loads((run / "stages" / "g5-sim.json").read_text())
        at = stage["steady_end"] - 1  # inside the stage: rates over the last 30 s are defined
        # A fresh server on the run's own TSDB (the run's Prometheus stopped with the run).
        proc, url = start_prometheus(binary, run / "replay", [], data_dir=run / "prometheus" / "data")
        try:
            answers[kind] = [_query(url, q, at) for _, _, q in queries]
            if kind == "closed":  # the stage annotation marks the stage's start (and only a stage change)
                marks = _annotation_queries()
                start, mid = stage["start"] + 10, stage["steady_end"] - 3  # the mark lasts 30 s
                marked = {name: (_query(url, q, start), _query(url, q, mid)) for name, q in marks}
        finally:
            proc.stop()
    assert len(queries) >= 20
    empty = [(d, t, q) for i, (d, t, q) in enumerate(queries) if not any(a[i] for a in answers.values())]
    assert not empty, "panels without data:\n" + "\n".join(f"{d} / {t}: {q}" for d, t, q in empty)
    offered = [i for i, (_, _, q) in enumerate(queries) if "fmbench_target_rate" in q]
    assert offered and all(answers["open"][i] and not answers["closed"][i] for i in offered), [
        (answers["open"][i], answers["closed"][i]) for i in offered
    ]
    assert [float(s["value"][1]) for i in offered for s in answers["open"][i]] == [6.0]
    assert [name for name, _ in marks] == ["live-run: Stage changes"]
    assert all(at_start and not mid_stage for at_start, mid_stage in marked.values()), marked


def _annotation_queries() -> list[tuple[str, str]]:
    """(dashboard: annotation, expr) of every Prometheus annotation, variables as "All"."""
    every = {name: ".*" for name in ("namespace", "benchmark", "variant")}
    return [
        (f"{path.stem}: {a['name']}", substitute(a["expr"], every))
        for path in sorted(DASHBOARDS.glob("*.json"))
        for a in load_dashboard(path).get("annotations", {}).get("list", [])
        if a.get("expr")
    ]
