"""End to end on the real node, as a user runs it: the chart installed with Helm, a Benchmark
applied, and nothing else.

The operator runs in its pod (the project's image, built from the Dockerfile's recipe) with the
chart's RBAC; it deploys simulator model servers as pods on the real node, the Locust master and
worker Jobs load them across pod IPs and Services, records go to an S3 server (moto) on the host
end of the node's link, a real Prometheus scrapes the pods through the chart's PodMonitors (turned
into its scrape configuration: there is no Prometheus Operator here), the analysis Job writes the
report, and the Benchmark's status carries the recommendation.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from fmbench_k8s.local.processes import ManagedProcess, free_port
from fmbench_k8s.local.prometheus import find_prometheus
from tests.chart.chartkit import CHART, JSON, by_kind, render_objects
from tests.cluster import devcluster
from tests.cluster.fixtures import REAL_NODE, TestCluster
from tests.cluster.node import RealNode, namespace_annotations
from tests.corpus import REPO
from tests.s3 import CREDENTIALS, MotoS3

pytestmark = pytest.mark.cluster

RELEASE = "fmb"
BUCKET = "results"
GROUP, VERSION, PLURAL = "fmbench.io", "v1alpha1", "benchmarks"
CLI = str(Path(sys.executable).parent / "fmbench-k8s")


def chart_values(image: str, *, secret: str = "s3-credentials") -> JSON:
    """This cluster's values, with the S3 credentials from a Secret (the production path)."""
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    values = devcluster.chart_values(image, env)
    values["operator"]["unschedulableGraceSeconds"] = 60
    return values


# -- Prometheus from the chart's PodMonitors ------------------------------------------------------


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def scrape_configs(pod_monitors: list[JSON], sd: JSON) -> list[JSON]:
    """What the Prometheus Operator generates from PodMonitors, for the fields the chart uses:
    label selector, namespaces, port name, path, honorLabels and relabelings (``sd``: where the
    pod targets come from)."""
    out = []
    for monitor in pod_monitors:
        spec = monitor["spec"]
        names = spec.get("namespaceSelector", {}).get("matchNames")
        namespaces = (
            [{"source_labels": ["__meta_kubernetes_namespace"], "regex": "|".join(names), "action": "keep"}]
            if names
            else []
        )
        selector = spec["selector"]["matchLabels"]
        keep_labels = [
            {
                "source_labels": [f"__meta_kubernetes_pod_label_{_label(k)}" for k in selector],
                "regex": ";".join(selector.values()),
                "action": "keep",
            }
        ]
        for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
            relabel = [
                *keep_labels,
                {
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": endpoint["port"],
                    "action": "keep",
                },
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                *({_snake(k): v for k, v in r.items()} for r in endpoint.get("relabelings", [])),
            ]
            job: JSON = {
                "job_name": f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/{i}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "scrape_interval": "1s",
                "http_sd_configs": [sd],
                "relabel_configs": [*namespaces, *relabel],
            }
            out.append(job)
    return out


def _label(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


class PodDiscovery:
    """Kubernetes pod service discovery served over Prometheus's HTTP SD: Debian's Prometheus is
    built without ``kubernetes_sd_configs``, so the targets and ``__meta_kubernetes_pod_*`` labels
    it would produce (one target per container port of each running pod) come from the API
    server's pod list here, and the PodMonitors' relabelings run in Prometheus unchanged."""

    def __init__(self, cluster: TestCluster) -> None:
        core: Any = cluster.core()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(_targets(core.list_pod_for_all_namespaces().items)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _targets(pods: list[Any]) -> list[JSON]:
    groups = []
    for pod in pods:
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            continue
        meta = {
            "__meta_kubernetes_namespace": pod.metadata.namespace,
            "__meta_kubernetes_pod_name": pod.metadata.name,
            "__meta_kubernetes_pod_ip": pod.status.pod_ip,
            "__meta_kubernetes_pod_node_name": pod.spec.node_name or "",
            **{f"__meta_kubernetes_pod_label_{_label(k)}": v for k, v in (pod.metadata.labels or {}).items()},
            **{f"__meta_kubernetes_pod_labelpresent_{_label(k)}": "true" for k in pod.metadata.labels or {}},
        }
        for container in pod.spec.containers:
            for port in container.ports or ():
                labels = {
                    **meta,
                    "__meta_kubernetes_pod_container_name": container.name,
                    "__meta_kubernetes_pod_container_port_name": port.name or "",
                    "__meta_kubernetes_pod_container_port_number": str(port.container_port),
                }
                groups.append({"targets": [f"{pod.status.pod_ip}:{port.container_port}"], "labels": labels})
    return groups


class Prometheus:
    def __init__(self, cluster: TestCluster, host: str, pod_monitors: list[JSON], workdir: Path) -> None:
        binary = find_prometheus()
        if binary is None:
            pytest.fail("prometheus is not installed (scripts/setup.sh installs Debian's)", pytrace=False)
        workdir.mkdir(parents=True, exist_ok=True)
        self.discovery = PodDiscovery(cluster)
        sd = {"url": self.discovery.url, "refresh_interval": "1s"}
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs(pod_monitors, sd)}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://{host}:{port}"
        self.proc = ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={host}:{port}",
            ],
            workdir / "prometheus.log",
        )
        cluster.wait_for(self._ready, timeout=60, description=f"Prometheus to be ready (log: {workdir})")

    def stop(self) -> None:
        self.proc.stop()
        self.discovery.close()

    def _ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def targets(self) -> list[tuple[str, str, str, str]]:
        """(job, scrape URL, health, last error) of every target."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=any", timeout=10) as resp:
            data: JSON = json.load(resp)["data"]
        return [(t["scrapePool"], t["scrapeUrl"], t["health"], t["lastError"]) for t in data["activeTargets"]]

    def query(self, promql: str) -> list[JSON]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            result: list[JSON] = json.load(resp)["data"]["result"]
        return result


# -- fixtures ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The module's namespace (on the real node, with the chart installed), and S3 (moto) and
    Prometheus on the host end of the node's link."""

    namespace: str
    s3: MotoS3
    prometheus: Prometheus


@pytest.fixture(scope="module")
def stack(cluster: TestCluster, real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import helm_python as helm

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    values = chart_values(real_node.images[0].ref)
    namespace = cluster.create_namespace(f"e2e-{uuid.uuid4().hex[:6]}")
    core: Any = cluster.core()
    # Every pod of this namespace runs on the real node; the kwok nodes would take some and run nothing.
    core.patch_namespace(namespace, {"metadata": {"annotations": namespace_annotations(REAL_NODE)}})
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    secret = {"metadata": {"name": "s3-credentials"}, "stringData": {k: CREDENTIALS[k] for k in keys}}
    core.create_namespaced_secret(namespace, secret)
    s3 = MotoS3(real_node.network.host_ip)
    s3.up()
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    monitors = by_kind(render_objects(values, namespace=namespace, release=RELEASE), "PodMonitor")
    assert len(monitors) == 2, [m["metadata"]["name"] for m in monitors]
    prom = Prometheus(cluster, real_node.network.host_ip, monitors, tmp_path_factory.mktemp("prometheus"))
    cfg = helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    try:
        cfg.install(CHART, RELEASE, values, namespace=namespace, wait="watcher", timeout=300)
        yield Stack(namespace, s3, prom)
    finally:
        cfg.uninstall(RELEASE, ignore_not_found=True, wait="watcher", timeout=120)
        cfg.close()
        core.delete_namespace(namespace)
        prom.stop()
        s3.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def run(cluster: TestCluster, stack: Stack) -> Iterator[Stack]:
    """The stack for one test; the test's Benchmarks and their pods are gone afterwards."""
    yield stack
    custom: Any = cluster.custom()
    for bench in custom.list_namespaced_custom_object(GROUP, VERSION, stack.namespace, PLURAL)["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, stack.namespace, PLURAL, bench["metadata"]["name"])
    _wait_no_pods_but_the_operator(cluster, stack.namespace)


def _wait_no_pods_but_the_operator(cluster: TestCluster, namespace: str) -> None:
    core: Any = cluster.core()

    def only_operator() -> bool:
        pods = core.list_namespaced_pod(namespace).items
        return all((p.metadata.labels or {}).get("app.kubernetes.io/component") == "operator" for p in pods)

    cluster.wait_for(only_operator, timeout=120, description="the run's pods to be gone")


# -- helpers ------------------------------------------------------------------------------------------


def benchmark(name: str, stack: Stack, variants: list[JSON], **load: Any) -> JSON:
    s3 = stack.s3
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Benchmark",
        "metadata": {"name": name},
        "spec": {
            "variants": variants,
            "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 128}, "outputTokens": {"mean": 8}},
            "slo": {"latency": {"metric": "e2e", "percentile": 50, "maxSeconds": 1.0}},
            "load": {
                "workers": 1,
                "warmup": "2s",
                "stageDuration": "6s",
                "drain": "5s",
                "minRequestsPerStage": 10,
                **load,
            },
            "report": {"s3": {"bucket": BUCKET, "prefix": "e2e", "endpointUrl": s3.endpoint, "region": "us-east-1"}},
            "prometheus": {"url": stack.prometheus.url},
        },
    }


def apply(cluster: TestCluster, namespace: str, body: JSON) -> None:
    cluster.custom().create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def status(cluster: TestCluster, namespace: str, name: str) -> JSON:
    obj = cluster.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj.get("status") or {})


def wait_phase(cluster: TestCluster, namespace: str, name: str, phases: set[str], timeout: float) -> JSON:
    def reached() -> JSON | None:
        st = status(cluster, namespace, name)
        return st if st.get("phase") in phases else None

    try:
        return cluster.wait_for(reached, timeout=timeout, description=f"Benchmark {name} to reach {sorted(phases)}")
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {json.dumps(status(cluster, namespace, name), indent=1)}") from None


def s3_json(stack: Stack, uri: str) -> JSON:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=stack.s3.endpoint, region_name="us-east-1")
    data: JSON = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return data


# -- tests -------------------------------------------------------------------------------------------


def test_a_search_over_two_simulated_variants_ends_ready_with_the_reports_recommendation_verified(
    cluster: TestCluster, run: Stack
) -> None:
    ns = run.namespace
    name = "two-sims"
    variants = [
        {"name": "g5-sim", "instanceType": "g5.2xlarge", "engine": "simulator"},
        {"name": "g6e-sim", "instanceType": "g6e.2xlarge", "engine": "simulator"},
    ]
    body = benchmark(name, run, variants, concurrency={"min": 1, "max": 4}, maxStages=3)
    # Three-turn conversations opening with one of two shared prefixes (docs/workloads.md): later
    # turns carry the history in the pods too
    body["spec"]["workload"]["conversation"] = {"turns": 3}
    body["spec"]["workload"]["sharedPrefix"] = {"prefixes": 2, "tokens": 64}
    # The verify phase (docs/verify.md) deploys the recommended N behind one Service and offers R:
    # a small headroom makes N several replicas.
    body["spec"]["analysis"] = {"headroom": 0.2}
    body["spec"]["verify"] = {"window": "6s", "stepAbove": 1.5}
    apply(cluster, ns, body)
    started = time.monotonic()
    final = wait_phase(cluster, ns, name, {"Succeeded", "Failed"}, timeout=1200)
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions["Ready"] == "True", final["conditions"]
    report_uri = final["report"]["uri"]
    report = s3_json(run, report_uri.rsplit("/", 1)[0] + "/report.json")
    # turn 1 is the 64-word prefix and a 128-word question (192), turns 2 and 3 carry one and two
    # more questions with their 8-token answers (328, 464): ~328 on average; without the prefix
    # ~264, without the history 192
    for v in report["variants"]:
        assert all(s["meanPromptTokens"] > 300 for s in v["stages"]), [s["meanPromptTokens"] for s in v["stages"]]
    recommended = final["recommendation"]
    assert {"variant", "instanceType", "instances", "costPerHour", "costPer1kRequests"} <= set(recommended)
    interval = report["recommendation"]["instancesInterval"] or {}
    from_report = {
        **report["recommendation"],
        "instancesLow": interval.get("low"),
        "instancesHigh": interval.get("high"),
    }
    assert recommended == {key: from_report[key] for key in recommended}
    # The pods really ran on the real node, and Prometheus scraped the workers through the chart's
    # PodMonitor (the client metrics carry the Benchmark's name).
    assert [v["nodeInstanceTypes"] for v in final["variants"]] == [["g6e.2xlarge"], ["g6e.2xlarge"]]
    pods = cluster.core().list_namespaced_pod(ns, label_selector=f"fmbench.io/benchmark={name}").items
    phases = {(p.metadata.labels["fmbench.io/component"], p.status.phase) for p in pods}
    assert {("loadgen-master", "Succeeded"), ("loadgen-worker", "Succeeded"), ("analysis", "Succeeded")} <= phases
    assert {p.spec.node_name for p in pods} == {REAL_NODE}
    # (the workers are gone: their series are stale now, the range still holds them)
    series = run.prometheus.query(f'max_over_time(fmbench_requests_total{{benchmark="{name}"}}[15m])')
    assert series, f"Prometheus has no client metrics of the run; its targets: {run.prometheus.targets()}"
    # Verified: the fleet of N held R = 600 req/min
    n = recommended["instances"]
    verification = final["verification"]
    assert n >= 2 and conditions["Verified"] == "True", json.dumps(verification, indent=1)
    assert (verification["verdict"], verification["verifiedInstances"]) == ("Confirmed", n)
    (attempt,) = verification["attempts"]
    assert attempt["instances"] == n and attempt["requestsPerMinute"] == 600 and attempt["requests"] >= 10
    assert attempt["sloCiLow"] <= attempt["sloSeconds"] <= attempt["sloCiHigh"] <= 1.0, attempt
    assert "step above: " in attempt["message"]
    # The N replicas were up behind the Service and it spread the load over them. (A Service
    # balances connections, not requests: one whose client kept its connections to the others may
    # serve nothing, docs/verify.md.)
    fleet = f"{recommended['variant']}-x{n}"
    up = run.prometheus.query(f'max_over_time(up{{variant="{fleet}", job=~".*model-servers.*"}}[15m]) == 1')
    assert len({s["metric"]["instance"] for s in up}) == n, up
    served = run.prometheus.query(f'max_over_time(vllm:request_success_total{{variant="{fleet}"}}[15m]) > 0')
    assert len({s["metric"]["instance"] for s in served}) >= 2, served
    stages: Any = s3_json(run, report_uri.rsplit("/", 1)[0] + f"/verify/stages/{fleet}.json")
    assert [s["target_rate"] for s in stages] == [10.0, 15.0]
    print(f"two-variant search on the real node: {time.monotonic() - started:.0f}s")


def test_an_existing_endpoint_is_benchmarked_from_the_pods(cluster: TestCluster, run: Stack, tmp_path: Path) -> None:
    """An ``endpoint:`` variant: no model server is deployed; the load generator pods reach an
    OpenAI-compatible server outside the cluster (the simulator on the host end of the link)."""
    host = run.s3.host
    port = free_port()
    server = ManagedProcess(
        "simulator",
        [CLI, "simulate", "--host", host, "--port", str(port), "--profile", "g6e.2xlarge", "--model", "sim"],
        tmp_path / "simulator.log",
    )
    try:
        cluster.wait_for(lambda: _answers(f"http://{host}:{port}/health"), timeout=60, description="the simulator")
        variant = {
            "name": "outside",
            "endpoint": {"api": "openai-chat", "url": f"http://{host}:{port}/v1", "model": "sim"},
            "instanceType": "g6e.2xlarge",
        }
        # Real prompts from a ConfigMap, mounted into the workers by the operator: without the
        # mount they could not read a single prompt and the run would fail. Sorted by the workers
        # into two prompt-length buckets by their word count.
        prompts = "\n".join(json.dumps({"text": f"question {i}: " + "why " * (8 if i % 2 else 80)}) for i in range(20))
        cluster.core().create_namespaced_config_map(
            run.namespace, {"metadata": {"name": "prompts"}, "data": {"data.jsonl": prompts}}
        )
        body = benchmark("outside", run, [variant], mode="fixed", concurrency={"levels": [2]})
        body["spec"]["workload"]["dataset"] = {"uri": "configmap://prompts/data.jsonl", "promptField": "text"}
        body["spec"]["workload"]["buckets"] = [
            {"name": "short", "minTokens": 1, "maxTokens": 20, "share": 0.5},
            {"name": "long", "minTokens": 50, "maxTokens": 100, "share": 0.5},
        ]
        # and an SLO of two bounds, judged together by the master in the pod and the analysis Job
        body["spec"]["slo"]["additionalLatency"] = [{"metric": "ttft", "percentile": 50, "maxSeconds": 5}]
        apply(cluster, run.namespace, body)
        final = wait_phase(cluster, run.namespace, "outside", {"Succeeded", "Failed"}, timeout=600)
    finally:
        server.stop()
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
    assert final["recommendation"]["variant"] == "outside"
    report = s3_json(run, final["report"]["uri"].rsplit("/", 1)[0] + "/report.json")
    (stage,) = report["variants"][0]["stages"]
    buckets = {b["name"]: b for b in stage["buckets"]}
    assert [b["name"] for b in stage["buckets"]] == ["short", "long"]
    assert sum(b["requests"] for b in buckets.values()) == stage["steady"]["requests"]
    assert all(b["ok"] > 0 for b in buckets.values()), buckets
    # the server's own count of each bucket's prompts: 10 words (plus the chat template) vs 82
    assert buckets["long"]["meanPromptTokens"] - buckets["short"]["meanPromptTokens"] == pytest.approx(72, abs=1)
    assert [(b["metric"], b["outcome"]) for b in stage["sloBounds"]] == [("e2e", "meets"), ("ttft", "meets")]
    kinds = {d.metadata.name for d in cluster.apps().list_namespaced_deployment(run.namespace).items}
    assert not any(k.startswith("outside-") for k in kinds), kinds


def test_a_model_server_that_cannot_start_fails_the_run_with_its_reason(cluster: TestCluster, run: Stack) -> None:
    variant = {"name": "broken", "instanceType": "g6e.2xlarge", "engine": "simulator", "args": ["--no-such-flag"]}
    apply(cluster, run.namespace, benchmark("broken", run, [variant], mode="fixed", concurrency={"levels": [1]}))
    started = time.monotonic()
    final = wait_phase(cluster, run.namespace, "broken", {"Failed", "Succeeded"}, timeout=120)
    elapsed = time.monotonic() - started
    assert final["phase"] == "Failed", json.dumps(final, indent=1)
    # The reason, the exit code and the program's own complaint, not a readiness timeout much later.
    assert "CrashLoopBackOff" in final["message"] and "exited with code 2" in final["message"], final["message"]
    assert "--no-such-flag" in final["message"], final["message"]
    print(f"crashing model server reported in {elapsed:.0f}s")


def test_a_benchmark_deleted_mid_run_leaves_nothing_behind(
    cluster: TestCluster, run: Stack, real_node: RealNode
) -> None:
    variant = {"name": "doomed", "instanceType": "g6e.2xlarge", "engine": "simulator"}
    # The load is a trace replay from S3 (docs/workloads.md): the workers read the trace in the pod
    # before the first request, so requests counted by Prometheus prove the in-cluster replay.
    trace = REPO / "examples" / "traces" / "azure-sample.csv"
    boto3.client("s3", endpoint_url=run.s3.endpoint, region_name="us-east-1").put_object(
        Bucket=BUCKET, Key="traces/azure.csv", Body=trace.read_bytes()
    )
    body = benchmark("doomed", run, [variant], mode="fixed", arrival="trace", rate={"levels": [4]},
                     stageDuration="5m")  # fmt: skip
    body["spec"]["workload"]["trace"] = {"uri": f"s3://{BUCKET}/traces/azure.csv", "format": "azure"}
    apply(cluster, run.namespace, body)
    wait_phase(cluster, run.namespace, "doomed", {"Running"}, timeout=300)
    core: Any = cluster.core()

    def load_running() -> bool:
        sent = run.prometheus.query('sum(fmbench_requests_total{benchmark="doomed"})')
        return bool(sent) and float(sent[0]["value"][1]) > 0

    cluster.wait_for(load_running, timeout=180, description="the replayed trace's requests to be answered")
    cluster.custom().delete_namespaced_custom_object(GROUP, VERSION, run.namespace, PLURAL, "doomed")
    selector = "fmbench.io/benchmark=doomed"

    def all_gone() -> bool:
        kinds = (
            core.list_namespaced_pod(run.namespace, label_selector=selector).items,
            core.list_namespaced_service(run.namespace, label_selector=selector).items,
            core.list_namespaced_config_map(run.namespace, label_selector=selector).items,
            cluster.apps().list_namespaced_deployment(run.namespace, label_selector=selector).items,
            cluster.batch().list_namespaced_job(run.namespace, label_selector=selector).items,
        )
        return not any(kinds)

    cluster.wait_for(all_gone, timeout=120, description="every child of the deleted Benchmark to be gone")

    # ... and on the node: no container of the run is left in containerd.
    def no_containers() -> bool:
        return not [pod for pod in _node_pods(real_node, run.namespace) if pod.startswith("doomed-")]

    cluster.wait_for(no_containers, timeout=60, description="the run's containers to leave the node")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _node_pods(node: RealNode, namespace: str) -> set[str]:
    """Pods of ``namespace`` that still have a container (or sandbox) in the node's containerd."""
    out = set()
    for cid in node.ctr("containers", "ls", "-q").stdout.split():
        info = node.ctr("containers", "info", cid, check=False)
        if info.returncode != 0:  # removed between the listing and the lookup: gone, as wanted
            continue
        labels = json.loads(info.stdout).get("Labels") or {}
        if labels.get("io.kubernetes.pod.namespace") == namespace:
            out.add(labels.get("io.kubernetes.pod.name", cid))
    return out


def test_a_wrong_endpoint_fails_the_run_with_one_line_that_says_why(cluster: TestCluster, run: Stack) -> None:
    """The master's outcome, not its log, is the status message (its termination message)."""
    host = run.s3.host
    variant = {
        "name": "wrong",
        "endpoint": {"api": "openai-chat", "url": f"{run.s3.endpoint}/v1", "model": "none"},  # S3, not a model
        "instanceType": "g6e.2xlarge",
    }
    apply(cluster, run.namespace, benchmark("wrong", run, [variant], mode="fixed", concurrency={"levels": [1]}))
    final = wait_phase(cluster, run.namespace, "wrong", {"Failed", "Succeeded"}, timeout=300)
    assert final["phase"] == "Failed", json.dumps(final, indent=1)
    message = final["message"]
    assert "endpoint unreachable" in message and "\n" not in message.strip(), message
    assert host in json.dumps(final) or "http_" in message, message
