"""Operator latency and memory on the real test control plane (kwok nodes).

Measures (issue targets: apply → first child p95 ≤ 1 s; RSS with 50 Benchmarks ≤ 150 MB):
- apply → first child: time from the create call returning to the Benchmark's first child
  (its ServiceAccount) being seen by a watch, over N Benchmarks created one after another;
- the operator process's RSS once N Benchmarks are being reconciled (all past Deploying).

Usage: .venv/bin/python benchmarks/bench_operator.py [--benchmarks 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.clusterkit import Cluster, load_node_groups  # noqa: E402
from tests.cluster.controlplane import ControlPlane, build_binaries  # noqa: E402
from tests.cluster.crd import install_crd  # noqa: E402


def _benchmark(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": f"bench-{i:03d}"},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "variants": [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"}],
            "workload": {"requestsPerMinute": 60, "promptTokens": {"mean": 100}, "outputTokens": {"mean": 10}},
            "slo": {"latency": {"maxSeconds": 2}},
            "report": {"s3": {"bucket": "results"}},
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--benchmarks", type=int, default=50)
    args = parser.parse_args()
    n = args.benchmarks

    state = Path(tempfile.mkdtemp(prefix="fmbench-bench-operator-"))
    cp = ControlPlane(build_binaries(quiet=True), state)
    cp.start()
    cluster = Cluster(cp.kubeconfig, load_node_groups())
    operator = None
    try:
        cluster.create_nodes()
        install_crd(cluster)
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "FMBENCH_INTERVAL_SECONDS": "2"}
        log = (state / "operator.log").open("w")
        operator = subprocess.Popen(
            [sys.executable, "-m", "fmbench_k8s.operator", "--namespace", "default", "--standalone", "--liveness", ""],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        from kubernetes import watch

        core: Any = cluster.core()
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch_children() -> None:
            w = watch.Watch()
            try:
                for event in w.stream(core.list_namespaced_service_account, "default", timeout_seconds=600):
                    name = event["object"].metadata.name
                    if name.endswith("-runner"):
                        seen.setdefault(name.removesuffix("-runner"), time.monotonic())
                    if stop.is_set():
                        w.stop()
            except Exception:  # the control plane going away at the end
                if not stop.is_set():
                    raise

        watcher = threading.Thread(target=watch_children, daemon=True)
        watcher.start()
        time.sleep(3)  # the operator's first list+watch
        custom: Any = cluster.custom()
        created: dict[str, float] = {}
        for i in range(n):
            body = _benchmark(i)
            custom.create_namespaced_custom_object("fmbench.io", "v1alpha1", "default", "benchmarks", body)
            created[body["metadata"]["name"]] = time.monotonic()
            time.sleep(0.1)
        deadline = time.monotonic() + 120
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        latencies = sorted(seen[k] - created[k] for k in created if k in seen)
        time.sleep(10)  # several reconcile rounds of every Benchmark
        rss_mb = psutil.Process(operator.pid).memory_info().rss / 2**20
        stop.set()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        result = {
            "benchmarks": n,
            "children_seen": len(latencies),
            "apply_to_first_child_p50_s": round(p(0.5), 3),
            "apply_to_first_child_p95_s": round(p(0.95), 3),
            "apply_to_first_child_max_s": round(latencies[-1], 3),
            "operator_rss_mb": round(rss_mb, 1),
        }
        print(json.dumps(result, indent=2))
        print(yaml.safe_dump({"targets": {"p95_s": 1.0, "rss_mb": 150}}))
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(15)
        cluster.close()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
