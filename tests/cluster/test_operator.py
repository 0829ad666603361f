"""The operator on the real control plane, with the RBAC the chart ships (not as admin).

The test plays the data plane: kwok runs the model server pods; Job pods are completed by the
test with the termination message the real container would write.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.contract.summary import InstancesInterval, OperatorSummary, Recommendation, StatusVariant
from fmbench_k8s.storage import open_storage
from tests.cluster.crd import install_crd, install_scrape_config_crd
from tests.cluster.fixtures import TestCluster
from tests.corpus import REPO
from tests.s3 import credentials_env

RULES = yaml.safe_load((REPO / "charts/fmbench-k8s/files/operator-rbac-rules.yaml").read_text())


def _grant_operator(cluster: TestCluster, ns: str) -> str:
    rbac = cluster.rbac()
    token = cluster.service_account_token(ns, "fmbench-operator")
    subject = [{"kind": "ServiceAccount", "name": "fmbench-operator", "namespace": ns}]
    rules = RULES["namespaced"] + RULES["leaderElection"]  # the test namespace is also the operator's
    rbac.create_namespaced_role(ns, {"metadata": {"name": "fmbench-operator"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "fmbench-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fmbench-operator"},
            "subjects": subject,
        },
    )
    name = f"fmbench-operator-{ns}"
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": RULES["cluster"]})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subject,
        }
    )
    return token


class Operator:
    """The operator as a process that a test can SIGKILL and start again."""

    def __init__(self, namespace: str, kubeconfig: Path, log_path: Path, leader_elect: str = "") -> None:
        """``leader_elect``: a replica name (its identity's prefix) to run with ``--leader-elect``."""
        self.namespace, self.log_path = namespace, log_path
        self.args = ["--leader-elect", "--lease-duration", "3"] if leader_elect else []
        self.env = {
            **os.environ,
            "POD_NAME": leader_elect,
            "KUBECONFIG": str(kubeconfig),
            "FMBENCH_UNSCHEDULABLE_GRACE_SECONDS": "2",
            "FMBENCH_INTERVAL_SECONDS": "1",
            "FMBENCH_IMAGE": "example.com/fmbench-k8s:test",
            "FMBENCH_SCRAPE_ENDPOINTS": "true",
            "FMBENCH_MONITOR_LABELS": json.dumps({"release": "kube-prometheus-stack"}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fmbench_k8s.operator", "--namespace", self.namespace, "--standalone",
                 "--liveness", "", *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup, as when a node dies
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text()


def _operator_kubeconfig(cluster: TestCluster, namespace: str, tmp_path: Path) -> Path:
    install_crd(cluster)
    install_scrape_config_crd(cluster)
    return cluster.kubeconfig_for_token(_grant_operator(cluster, namespace), tmp_path / "operator.kubeconfig")


@pytest.fixture
def operator(cluster: TestCluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(namespace, _operator_kubeconfig(cluster, namespace, tmp_path), tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print(op.log()[-5000:])


def _benchmark(name: str, variants: list[dict[str, Any]], s3_endpoint: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "tokenSecretRef": {"name": "hf-token"}},
            "variants": variants,
            "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
            "slo": {"latency": {"metric": "e2e", "percentile": 95, "maxSeconds": 2.0}},
            "load": {"workers": 2, "concurrency": {"levels": [1, 2]}, "mode": "sweep"},
            "report": {
                "s3": {
                    "bucket": "results",
                    "prefix": "fmbench",
                    **({"endpointUrl": s3_endpoint} if s3_endpoint else {}),
                }
            },
        },
    }


def _get(cluster: TestCluster, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom().get_namespaced_custom_object(
        "fmbench.io", "v1alpha1", ns, "benchmarks", name
    )
    return obj


def _phase(cluster: TestCluster, ns: str, name: str, phase: str) -> dict[str, Any] | None:
    obj = _get(cluster, ns, name)
    status = obj.get("status") or {}
    if status.get("phase") == "Failed" and phase != "Failed":
        raise AssertionError(f"Benchmark failed: {status.get('message')}")
    return obj if status.get("phase") == phase else None


def _complete_job_pods(cluster: TestCluster, ns: str, selector: str, message: str = "") -> int:
    pods = cluster.core().list_namespaced_pod(ns, label_selector=selector).items
    for pod in pods:
        if pod.status.phase not in ("Succeeded", "Failed"):
            cluster.complete_pod(ns, pod.metadata.name, message=message)
    return len(pods)


def test_gpu_neuron_and_endpoint_variants_run_to_succeeded(
    cluster: TestCluster, namespace: str, operator: Operator, s3_endpoint: str, tmp_path: Path
) -> None:
    ns, name = namespace, "lifecycle"
    variants: list[dict[str, Any]] = [
        {"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "vllm"},
        {"name": "inf2", "instanceType": "inf2.8xlarge", "engine": "neuronx-vllm"},
        {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://vllm.other:8000/v1"}, "pricePerHour": 1.0},
    ]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", ns, "benchmarks", _benchmark(name, variants, s3_endpoint)
    )

    apps = cluster.apps()
    dep = cluster.wait_for(lambda: _read_or_none(lambda: apps.read_namespaced_deployment(f"{name}-g6e-server", ns)))
    pod_spec = dep.spec.template.spec
    assert pod_spec.node_selector == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}
    assert dep.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert dep.metadata.owner_references[0].kind == "Benchmark"
    # the operator makes the variants' servers one after the other: wait for this one too
    neuron = cluster.wait_for(lambda: _read_or_none(lambda: apps.read_namespaced_deployment(f"{name}-inf2-server", ns)))
    assert neuron.spec.template.spec.containers[0].resources.limits["aws.amazon.com/neuron"] == "1"

    running = cluster.wait_for(lambda: _phase(cluster, ns, name, "Running"), timeout=120)
    # The endpoint's /metrics, for the Prometheus Operator: accepted by its real CRD's schema.
    scrape = _scrape_config(cluster, ns, f"{name}-ext-metrics")
    assert scrape is not None, "no ScrapeConfig for the endpoint variant"
    assert scrape["spec"]["staticConfigs"] == [
        {"targets": ["vllm.other:8000"], "labels": {"benchmark": name, "variant": "ext"}}
    ]
    assert (scrape["spec"]["scheme"], scrape["spec"]["metricsPath"]) == ("HTTP", "/metrics")
    assert scrape["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert scrape["metadata"]["ownerReferences"][0]["kind"] == "Benchmark"
    by_name = {v["name"]: v for v in running["status"]["variants"]}
    assert by_name["g6e"]["nodeInstanceTypes"] == ["g6e.2xlarge"]
    assert by_name["inf2"]["nodeInstanceTypes"] == ["inf2.8xlarge"]
    # kopf posts events asynchronously: the status may show Running before its event exists.
    cluster.wait_for(lambda: {"Deploying", "Running"} <= cluster.event_reasons(ns, name) or None, timeout=30)

    batch = cluster.batch()
    for v in ("g6e", "inf2", "ext"):
        job = f"{name}-{v}-lg-master"
        cluster.wait_for(lambda job=job: _read_or_none(lambda: batch.read_namespaced_job(job, ns)))  # type: ignore[misc]
    cluster.wait_for(lambda: _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-master") >= 3 or None)
    _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-worker")

    analyzing = cluster.wait_for(lambda: _phase(cluster, ns, name, "Analyzing"), timeout=120)
    run_id = analyzing["status"]["runId"]
    # Play the data plane: the records the load generators would have written, then the analysis
    # pod's own command and arguments, run here (the contract test of the generated pod spec).
    table, stages = synthesize_table(
        [SyntheticVariant(v, levels=(1, 2), ttft_s=0.1, itl_s=0.01, output_tokens=64) for v in ("g6e", "inf2", "ext")],
        warmup_s=2, stage_s=60, drain_s=2,
    )  # fmt: skip
    write_run(open_storage(f"s3://results/fmbench/{ns}/{name}/{run_id}", endpoint_url=s3_endpoint), table, stages)
    pod = cluster.wait_for(lambda: _first_pod(cluster, ns, "fmbench.io/component=analysis"))
    summary = _run_like_the_pod(cluster, ns, pod, tmp_path)
    assert len(summary.encode()) <= 4096, "the summary must fit a termination message"
    cluster.complete_pod(ns, pod.metadata.name, message=summary)
    expected = json.loads(summary)["recommendation"]
    done = cluster.wait_for(lambda: _phase(cluster, ns, name, "Succeeded"), timeout=120)
    status = done["status"]
    assert status["recommendation"]["variant"] == expected["variant"]
    assert status["recommendation"]["instances"] == expected["instances"] >= 1
    assert status["report"]["uri"] == f"s3://results/fmbench/{ns}/{name}/{run_id}/report.html"
    s3 = open_storage(f"s3://results/fmbench/{ns}/{name}/{run_id}", endpoint_url=s3_endpoint)
    assert "report.html" in s3.list_keys() and "report.json" in s3.list_keys()
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    # cleanup: Always removes the model servers and the endpoint's scrape once the run is over
    cluster.wait_for(
        lambda: _read_or_none(lambda: apps.read_namespaced_deployment(f"{name}-g6e-server", ns)) is None or None
    )
    cluster.wait_for(lambda: _scrape_config(cluster, ns, f"{name}-ext-metrics") is None or None)


def _scrape_config(cluster: TestCluster, ns: str, name: str) -> dict[str, Any] | None:
    custom = cluster.custom()
    found: dict[str, Any] | None = _read_or_none(
        lambda: custom.get_namespaced_custom_object("monitoring.coreos.com", "v1alpha1", ns, "scrapeconfigs", name)
    )
    return found


def test_too_many_gpus_fails_with_the_scheduler_reason(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    # One g6e.2xlarge node with one GPU: the second replica can never be placed.
    variants = [{"name": "huge", "instanceType": "g6e.2xlarge", "engine": "vllm", "replicas": 2}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("unschedulable", variants)
    )
    failed = cluster.wait_for(lambda: _phase(cluster, namespace, "unschedulable", "Failed"), timeout=120)
    assert "InsufficientAccelerators" in failed["status"]["message"]
    assert "Insufficient nvidia.com/gpu" in failed["status"]["message"]
    assert "variant huge" in failed["status"]["message"]


def test_pods_the_api_server_refuses_fail_the_run_with_its_answer(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    """A quota (or an admission policy) refuses the model server's pods: the ReplicaSet's
    FailedCreate reaches the status at once, not a readiness timeout 45 minutes later."""
    quota = {"metadata": {"name": "no-gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}}
    cluster.core().create_namespaced_resource_quota(namespace, quota)
    variants = [{"name": "quota", "instanceType": "g6e.2xlarge", "engine": "vllm"}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("refused", variants)
    )
    failed = cluster.wait_for(lambda: _phase(cluster, namespace, "refused", "Failed"), timeout=120)
    message = failed["status"]["message"]
    assert "FailedCreate" in message and "exceeded quota" in message and "variant quota" in message, message


def test_a_child_the_api_server_refuses_fails_the_run_with_its_answer_and_nothing_held(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    """Refused at creation (here a quota of no Deployments; equally an admission policy or a
    missing permission): the run fails within a tick or two with the API server's answer, instead
    of the operator retrying until spec.timeouts.run (6 h)."""
    quota = {"metadata": {"name": "no-deployments"}, "spec": {"hard": {"count/deployments.apps": "0"}}}
    cluster.core().create_namespaced_resource_quota(namespace, quota)
    variants = [{"name": "late", "instanceType": "g5.2xlarge", "engine": "vllm"}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("rejected", variants)
    )
    failed = cluster.wait_for(lambda: _phase(cluster, namespace, "rejected", "Failed"), timeout=120)
    message = failed["status"]["message"]
    assert message.startswith("the API server refused Deployment rejected-late-server: "), message
    assert "exceeded quota: no-deployments" in message, message
    assert {c["type"]: c["reason"] for c in failed["status"]["conditions"]}["Ready"] == "Rejected"
    # ... and it stays failed: no retry loop creating or deleting anything.
    assert "Traceback" not in operator.log()


def test_load_generator_pods_a_quota_refuses_fail_the_run_with_the_refusal(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    """A Job has no condition for pods it cannot create; the FailedCreate event says why."""
    quota = {"metadata": {"name": "tiny-cpu"}, "spec": {"hard": {"requests.cpu": "100m"}}}
    cluster.core().create_namespaced_resource_quota(namespace, quota)
    variants = [
        {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://vllm.other:8000/v1"}, "pricePerHour": 1.0}
    ]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("starved", variants)
    )
    failed = cluster.wait_for(lambda: _phase(cluster, namespace, "starved", "Failed"), timeout=120)
    message = failed["status"]["message"]
    assert message.startswith("variant ext: load generator"), message
    assert "FailedCreate: " in message and "exceeded quota: tiny-cpu" in message, message


def test_an_instance_type_the_operator_cannot_size_fails_before_anything_is_created(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    variants = [{"name": "new", "instanceType": "g7.2xlarge", "engine": "vllm", "pricePerHour": 2.0}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("unsized", variants)
    )
    failed = cluster.wait_for(lambda: _phase(cluster, namespace, "unsized", "Failed"), timeout=120)
    assert "unknown instance type 'g7.2xlarge'" in failed["status"]["message"]
    assert cluster.apps().list_namespaced_deployment(namespace).items == []


def test_deleting_the_benchmark_garbage_collects_its_children(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    variants = [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"}]
    custom = cluster.custom()
    custom.create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("gc", variants)
    )
    apps = cluster.apps()
    cluster.wait_for(lambda: _read_or_none(lambda: apps.read_namespaced_deployment("gc-g5-server", namespace)))
    custom.delete_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks", "gc")
    cluster.wait_for(
        lambda: _read_or_none(lambda: apps.read_namespaced_deployment("gc-g5-server", namespace)) is None or None,
        timeout=120,
    )


def _first_pod(cluster: TestCluster, ns: str, selector: str) -> Any:
    pods = cluster.core().list_namespaced_pod(ns, label_selector=selector).items
    return pods[0] if pods else None


def _run_like_the_pod(cluster: TestCluster, ns: str, pod: Any, tmp_path: Path) -> str:
    """Run the pod's container command locally: the ConfigMap's spec where the pod mounts it, a
    file where the pod's termination message goes, the pod's environment plus test credentials."""
    container = pod.spec.containers[0]
    config_map = next(v.config_map.name for v in pod.spec.volumes if v.config_map is not None)
    spec = tmp_path / "spec.yaml"
    spec.write_text(cluster.core().read_namespaced_config_map(config_map, ns).data["spec.yaml"])
    message = tmp_path / "termination-log"
    mount = next(m.mount_path for m in container.volume_mounts if m.name == "spec")
    replace = {f"{mount}/spec.yaml": str(spec), container.termination_message_path: str(message)}
    argv = [str(Path(sys.executable).parent / container.command[0])]
    argv += [replace.get(a, a) for a in container.args]
    env = {**credentials_env(), **{e.name: e.value for e in container.env or [] if e.value is not None}}
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return message.read_text()


def _read_or_none(read: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _uid(read: Any) -> str:
    return str(read().metadata.uid)


class Chaos:
    """SIGKILLs and restarts the operator at random moments (seeded) while a test waits."""

    def __init__(self, operator: Operator, seed: int = 7) -> None:
        self.operator, self.rng, self.kills = operator, random.Random(seed), 0
        self._next = time.monotonic() + self.rng.uniform(0.2, 2.0)

    def _maybe_kill(self, budget: int) -> None:
        if self.kills < budget and time.monotonic() >= self._next:
            self.operator.kill()
            self.operator.start()
            self.kills += 1
            self._next = time.monotonic() + self.rng.uniform(0.2, 2.0)

    def wait(self, cluster: TestCluster, predicate: Any, *, kills: int, timeout: float = 180) -> Any:
        """Wait for ``predicate``, killing at random moments until ``kills`` kills in all were made.

        The budget is a total, never exceeded, so the count of kills does not depend on how
        long each phase happens to take on a loaded machine.
        """

        def chaotic() -> Any:
            self._maybe_kill(kills)
            value = predicate()
            return value if value and self.kills >= kills else None

        return cluster.wait_for(chaotic, timeout=timeout, interval=0.1)


def test_the_operator_killed_ten_times_at_random_points_completes_the_run_once(
    cluster: TestCluster, namespace: str, operator: Operator, s3_endpoint: str, tmp_path: Path
) -> None:
    ns, name = namespace, "restarts"
    variants: list[dict[str, Any]] = [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"}]
    custom, apps, batch = cluster.custom(), cluster.apps(), cluster.batch()
    custom.create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", ns, "benchmarks", _benchmark(name, variants, s3_endpoint)
    )
    chaos = Chaos(operator)

    def server() -> Any:
        return _read_or_none(lambda: apps.read_namespaced_deployment(f"{name}-g5-server", ns))

    def master() -> Any:
        return _read_or_none(lambda: batch.read_namespaced_job(f"{name}-g5-lg-master", ns))

    server_uid = chaos.wait(cluster, server, kills=2).metadata.uid  # kills in Deploying
    chaos.wait(cluster, lambda: _phase(cluster, ns, name, "Running"), kills=4)
    master_uid = chaos.wait(cluster, master, kills=6).metadata.uid  # kills in Running, load unfinished
    assert server().metadata.uid == server_uid
    chaos.wait(cluster, lambda: _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-master") >= 1, kills=7)
    chaos.wait(cluster, lambda: _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-worker") >= 2, kills=7)
    analyzing = chaos.wait(cluster, lambda: _phase(cluster, ns, name, "Analyzing"), kills=8)
    pod = chaos.wait(cluster, lambda: _first_pod(cluster, ns, "fmbench.io/component=analysis"), kills=10)
    assert chaos.kills == 10

    # The analysis pod's own command on the run's records, as the pod would run it: the operator
    # must copy exactly its recommendation, however often it was killed.
    run_id = analyzing["status"]["runId"]
    table, stages = synthesize_table([SyntheticVariant("g5", levels=(1, 2), ttft_s=0.05, itl_s=0.005)], stage_s=60)
    write_run(open_storage(f"s3://results/fmbench/{ns}/{name}/{run_id}", endpoint_url=s3_endpoint), table, stages)
    message = _run_like_the_pod(cluster, ns, pod, tmp_path)
    cluster.complete_pod(ns, pod.metadata.name, message=message)

    done = cluster.wait_for(lambda: _phase(cluster, ns, name, "Succeeded"), timeout=120)
    assert operator.starts == 11
    assert done["status"]["runId"] == run_id, "the run id survives restarts"
    undisturbed = OperatorSummary.parse(message).recommendation
    assert undisturbed is not None
    assert done["status"]["recommendation"] == undisturbed.status()
    # nothing was created twice: the same objects carried the run through every restart
    assert master().metadata.uid == master_uid
    for component in ("loadgen-master", "analysis"):
        pods = cluster.core().list_namespaced_pod(ns, label_selector=f"fmbench.io/component={component}").items
        assert len(pods) == 1, component
    assert len(cluster.core().list_namespaced_pod(ns, label_selector="fmbench.io/component=loadgen-worker").items) == 2
    cluster.wait_for(lambda: server() is None or None)  # and the model server was cleaned up after the run


def _phases(cluster: TestCluster, ns: str) -> list[tuple[str, str | None]]:
    items = cluster.custom().list_namespaced_custom_object("fmbench.io", "v1alpha1", ns, "benchmarks")["items"]
    out = [(i["metadata"]["name"], (i.get("status") or {}).get("phase")) for i in items]
    assert all(p != "Failed" for _, p in out), [i.get("status") for i in items if (i.get("status") or {}).get("phase")]
    return out


def test_fifty_benchmarks_at_once_each_run_once_to_succeeded(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    ns, count = namespace, 50
    names = [f"many-{i:02d}" for i in range(count)]
    endpoint = {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://vllm.other:8000/v1"},
                "pricePerHour": 1.5}  # fmt: skip
    for n in names:
        cluster.custom().create_namespaced_custom_object(
            "fmbench.io", "v1alpha1", ns, "benchmarks", _benchmark(n, [endpoint])
        )

    def all_in(phase: str) -> bool | None:
        phases = _phases(cluster, ns)
        return (len(phases) == count and all(p == phase for _, p in phases)) or None

    cluster.wait_for(lambda: all_in("Running"), timeout=300)
    # the data plane: every load generator pod finishes (as the Job controller creates them) ...
    for component, pods in (("loadgen-master", count), ("loadgen-worker", 2 * count)):
        selector = f"fmbench.io/component={component}"
        cluster.wait_for(lambda: _complete_job_pods(cluster, ns, selector) == pods or None, timeout=120)  # noqa: B023
    cluster.wait_for(lambda: all_in("Analyzing"), timeout=300)
    # ... then every analysis pod reports

    def analyses_done() -> bool | None:
        pods = cluster.core().list_namespaced_pod(ns, label_selector="fmbench.io/component=analysis").items
        for pod in pods:
            if pod.status.phase not in ("Succeeded", "Failed"):
                bench = pod.metadata.labels["fmbench.io/benchmark"]
                cluster.complete_pod(ns, pod.metadata.name, message=json.dumps(_summary(bench)))
        return len(pods) == count or None

    cluster.wait_for(analyses_done, timeout=120)
    cluster.wait_for(lambda: all_in("Succeeded"), timeout=300)

    done = cluster.custom().list_namespaced_custom_object("fmbench.io", "v1alpha1", ns, "benchmarks")["items"]
    assert all(d["status"]["recommendation"]["variant"] == "ext" for d in done)
    for component, per_run in (("loadgen-master", 1), ("analysis", 1), ("loadgen-worker", 2)):
        pods = cluster.core().list_namespaced_pod(ns, label_selector=f"fmbench.io/component={component}").items
        runs = sorted(p.metadata.labels["fmbench.io/benchmark"] for p in pods)
        assert runs == sorted(names * per_run), f"{component}: each run's pods exactly once"


def _summary(bench: str) -> dict[str, Any]:
    """The analysis Job's termination message, in the contract's form."""
    rec = Recommendation(
        variant="ext", model="m", instance_type=None, instances=2, cost_per_hour=3.0, cost_per_1k_requests=0.08,
        cost_per_1m_output_tokens=None, latency_seconds=1.2, max_concurrency_meeting_slo=2, lower_bound=False,
        instances_interval=InstancesInterval(low=2, high=3, confidence=0.95), pricing="instance",
    )  # fmt: skip
    return OperatorSummary(
        benchmark=bench, run_id="r", partial=False, report_uri=f"s3://results/fmbench/{bench}/report.html",
        recommendation=rec, variants=[StatusVariant(name="ext", stages=2, max_concurrency_meeting_slo=2)],
    ).doc()  # fmt: skip


def test_secret_values_never_leave_their_secret(cluster: TestCluster, namespace: str, operator: Operator) -> None:
    canary = "canary-7f3a9c1e-do-not-leak"
    core = cluster.core()
    for name in ("hf-token", "api-key"):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"token": canary}})
    variants: list[dict[str, Any]] = [
        {"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"},
        {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://x:8000/v1",
                                     "apiKeySecretRef": {"name": "api-key"}}},
    ]  # fmt: skip
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("secrets", variants)
    )
    cluster.wait_for(lambda: _phase(cluster, namespace, "secrets", "Running"), timeout=120)
    admin = cluster.admin
    seen = [
        json.dumps(_get(cluster, namespace, "secrets")),
        json.dumps(admin.sanitize_for_serialization(core.list_namespaced_event(namespace))),
        json.dumps(admin.sanitize_for_serialization(cluster.apps().list_namespaced_deployment(namespace))),
        json.dumps(admin.sanitize_for_serialization(cluster.batch().list_namespaced_job(namespace))),
        json.dumps(admin.sanitize_for_serialization(core.list_namespaced_config_map(namespace))),
        operator.log_path.read_text(),
    ]
    assert all(canary not in text for text in seen)
    # ...while the references are in place for the kubelet to resolve
    assert '"secretKeyRef": {"key": "token", "name": "hf-token"}' in seen[2]
    assert '"secretKeyRef": {"key": "token", "name": "api-key"}' in seen[3]


def test_the_operator_reconnects_after_the_api_server_restarts(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    assert cluster.control_plane is not None, "needs the control plane this session started"
    variants: list[dict[str, Any]] = [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("apirestart", variants)
    )
    apps = cluster.apps()
    cluster.wait_for(lambda: _read_or_none(lambda: apps.read_namespaced_deployment("apirestart-g5-server", namespace)))
    cluster.control_plane.restart_apiserver()
    # The model server becomes Ready while the operator's connections are new: it must notice.
    # (After a restart under load the controllers' informers can take minutes to catch up; the
    # failure message says whether the Deployment itself ever became Ready.)
    try:
        cluster.wait_for(lambda: _phase(cluster, namespace, "apirestart", "Running"), timeout=300)
    except AssertionError as err:
        deployment = apps.read_namespaced_deployment("apirestart-g5-server", namespace)
        raise AssertionError(f"not Running ({err}); the Deployment's status: {deployment.status}") from None
    assert operator.proc is not None and operator.proc.poll() is None, "the operator survived the outage"


def test_a_permission_granted_late_is_waited_for_not_called_a_refusal(
    cluster: TestCluster, namespace: str, operator: Operator
) -> None:
    """RBAC denies a create (the Role is applied after the operator, as Helm or Argo CD may order it;
    or the API server's authorizer is filling its cache after a restart): the operator retries for
    a grace period instead of failing the run, and goes on once the permission is there."""
    rbac = cluster.rbac()
    granted = RULES["namespaced"] + RULES["leaderElection"]  # as _grant_operator gave them
    without = [{**r, "verbs": ["get", "list", "watch", "delete"]} if r["apiGroups"] == ["apps"] else r for r in granted]
    rbac.patch_namespaced_role("fmbench-operator", namespace, {"rules": without})
    variants: list[dict[str, Any]] = [{"name": "g5", "instanceType": "g5.2xlarge", "engine": "vllm"}]
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark("lategrant", variants)
    )
    cluster.wait_for(lambda: "retrying for 0:01:00 before the run fails" in operator.log() or None, timeout=60)
    assert 'cannot create resource "deployments"' in operator.log()
    assert (_get(cluster, namespace, "lategrant").get("status") or {}).get("phase") != "Failed"
    rbac.patch_namespaced_role("fmbench-operator", namespace, {"rules": granted})
    cluster.wait_for(lambda: _phase(cluster, namespace, "lategrant", "Deploying"), timeout=60)
    cluster.apps().read_namespaced_deployment("lategrant-g5-server", namespace)
    assert operator.log().count("before the run fails") == 1, "one warning per denial, not one per tick"


def _lease_holder(cluster: TestCluster, ns: str) -> tuple[str, int] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        spec = cluster.coordination().read_namespaced_lease("fmbench-operator", ns).spec
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return (spec.holder_identity or "", spec.lease_transitions or 0)


def _holder_is(cluster: TestCluster, ns: str, replica: str) -> tuple[str, int] | None:
    lease = _lease_holder(cluster, ns)
    return lease if lease and lease[0].startswith(f"{replica}_") else None


def test_of_two_operator_replicas_only_the_lease_holder_acts(
    cluster: TestCluster, namespace: str, tmp_path: Path
) -> None:
    ns, name = namespace, "replicas"
    kubeconfig = _operator_kubeconfig(cluster, ns, tmp_path)
    a = Operator(ns, kubeconfig, tmp_path / "a.log", leader_elect="op-a")
    b = Operator(ns, kubeconfig, tmp_path / "b.log", leader_elect="op-b")
    try:
        a.start()
        cluster.wait_for(lambda: _holder_is(cluster, ns, "op-a"), timeout=60)
        b.start()
        cluster.wait_for(lambda: "stands by" in b.log() or None, timeout=60)
        endpoint = {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://vllm.other:8000/v1"}}
        cluster.custom().create_namespaced_custom_object(
            "fmbench.io", "v1alpha1", ns, "benchmarks", _benchmark(name, [endpoint])
        )
        cluster.wait_for(lambda: _phase(cluster, ns, name, "Running"), timeout=60)
        assert f"created Job/{name}-ext-lg-master" in a.log()
        assert "created " not in b.log(), "the standby acted"

        a.kill()  # the leader dies without releasing: the standby waits out the lease, then acts
        cluster.wait_for(lambda: _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-master") >= 1 or None)
        _complete_job_pods(cluster, ns, "fmbench.io/component=loadgen-worker")
        cluster.wait_for(lambda: _phase(cluster, ns, name, "Analyzing"), timeout=60)
        assert _holder_is(cluster, ns, "op-b") is not None
        assert "created Job/" in b.log() and "now leads" in b.log()

        a.start()  # back as the standby ...
        cluster.wait_for(lambda: "stands by" in a.log() or None, timeout=60)
        transitions = cluster.wait_for(lambda: _holder_is(cluster, ns, "op-b"))[1]
        b.stop()  # ... and a clean stop hands over at once: the Lease is released, not left to expire
        assert "released Lease" in b.log()
        assert cluster.wait_for(lambda: _holder_is(cluster, ns, "op-a"), timeout=30)[1] == transitions + 1
        cluster.wait_for(lambda: a.log().count("now leads") >= 2 or None, timeout=30)
        assert "Timer 'tick' succeeded" not in a.log(), "one line per Benchmark per interval drowns the log"
    finally:
        for op in (a, b):
            op.stop()
            print(op.log_path.name, op.log()[-3000:])
