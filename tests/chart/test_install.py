"""The chart installed into the real test control plane (kube-apiserver, scheduler, controller
manager, kwok nodes) by Helm's Go SDK, and the operator run with exactly what the chart gives it.

kwok marks the operator's pod Ready without running it, so the Deployment becoming Available
proves the manifests are accepted and schedulable. To prove the chart's RBAC and configuration
suffice, the operator then runs here as a subprocess with the container's own args and env (read
back from the installed Deployment) and a kubeconfig carrying the chart-created ServiceAccount's
token, and moves a Benchmark from Pending through Deploying to Running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from fmbench_k8s.local.processes import free_port
from tests.chart.chartkit import CHART, JSON
from tests.cluster.clusterkit import ApiException, raw_request
from tests.cluster.crd import install_karpenter_crds
from tests.cluster.fixtures import TestCluster

pytestmark = pytest.mark.cluster

RELEASE = "fmb"
FULLNAME = "fmb-fmbench-k8s"
RUNNER_ROLE = "arn:aws:iam::111122223333:role/fmbench-runner"
VALUES: JSON = {
    "image": {"repository": "example.com/fmbench-k8s", "tag": "test"},
    "operator": {"intervalSeconds": 1, "unschedulableGraceSeconds": 5},
    "runner": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": RUNNER_ROLE}}},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/fmbench-op"}},
    "networkPolicy": {"enabled": True},  # the API server validates them (kwok enforces none)
}


def _helm(cluster: TestCluster, namespace: str) -> helm.Config:
    return helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)


def _install(cluster: TestCluster, namespace: str, values: JSON, release: str = RELEASE) -> Iterator[JSON]:
    cfg = _helm(cluster, namespace)
    try:
        yield cfg.install(CHART, release, values, namespace=namespace, wait="watcher", timeout=180)
    finally:
        cfg.uninstall(release, ignore_not_found=True, wait="watcher", timeout=120)
        cfg.close()


def _read(read: Any) -> Any:
    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _can(cluster: TestCluster, subject: tuple[str, str], verb: str, resource: str, namespace: str = "") -> bool:
    """SubjectAccessReview for ServiceAccount ``subject`` = (namespace, name); ``resource`` is
    ``plural[.group][/subresource]``."""
    sa_namespace, sa = subject
    resource, _, subresource = resource.partition("/")
    resource, _, group = resource.partition(".")
    review = raw_request(
        cluster.admin,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{sa_namespace}:{sa}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"],
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "namespace": namespace,
                    "group": group,
                    "subresource": subresource,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


def _benchmark(name: str) -> JSON:
    return {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "variants": [{"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "vllm"}],
            "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
            "slo": {"latency": {"metric": "e2e", "percentile": 95, "maxSeconds": 2.0}},
            "load": {"workers": 1, "concurrency": {"levels": [1, 2]}, "mode": "sweep"},
            "report": {"s3": {"bucket": "results", "prefix": "fmbench"}},
        },
    }


def _phase(cluster: TestCluster, namespace: str, name: str) -> str | None:
    obj = cluster.custom().get_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks", name)
    status = obj.get("status") or {}
    if status.get("phase") == "Failed":
        raise AssertionError(f"Benchmark failed: {status.get('message')}")
    phase: str | None = status.get("phase")
    return phase


def test_chart_installs_and_its_rbac_runs_the_operator(cluster: TestCluster, namespace: str, tmp_path: Path) -> None:
    installing = _install(cluster, namespace, VALUES)
    release = next(installing)
    try:
        assert release["status"] == "deployed" and "get fmb" in release["notes"]
        _check_installed(cluster, namespace)
        _run_operator_as_the_chart_configures_it(cluster, namespace, tmp_path)
    finally:
        next(installing, None)
    # uninstall removes what the chart templates created and keeps the CRD (Helm never deletes crds/)
    assert _read(lambda: cluster.apps().read_namespaced_deployment(FULLNAME, namespace)) is None
    assert _read(lambda: cluster.rbac().read_cluster_role(f"{namespace}-{FULLNAME}")) is None
    ext = cluster.api_client()
    assert raw_request(ext, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/benchmarks.fmbench.io")
    ext.close()


def _check_installed(cluster: TestCluster, namespace: str) -> None:
    dep = cluster.apps().read_namespaced_deployment(FULLNAME, namespace)
    conditions = {c.type: c.status for c in dep.status.conditions or ()}
    assert conditions.get("Available") == "True" and dep.status.available_replicas == 1
    pod = cluster.core().list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=operator").items[0]
    assert pod.spec.node_name and pod.spec.node_name.startswith("cpu-"), pod.spec.node_name  # not on a GPU node
    assert pod.spec.security_context.run_as_user == 10001
    sa = cluster.core().read_namespaced_service_account(FULLNAME, namespace)
    assert sa.metadata.annotations["eks.amazonaws.com/role-arn"].endswith("role/fmbench-op")
    sa_ns = namespace
    assert _can(cluster, (sa_ns, FULLNAME), "create", "deployments.apps", namespace)
    assert _can(cluster, (sa_ns, FULLNAME), "patch", "benchmarks.fmbench.io/status", namespace)
    assert _can(cluster, (sa_ns, FULLNAME), "get", "nodes")
    assert not _can(cluster, (sa_ns, FULLNAME), "create", "deployments.apps", "kube-system")  # namespaced mode
    assert not _can(cluster, (sa_ns, FULLNAME), "get", "secrets", namespace)
    assert not _can(cluster, (sa_ns, FULLNAME), "list", "secrets")


def _run_operator_as_the_chart_configures_it(cluster: TestCluster, namespace: str, tmp_path: Path) -> None:
    container = cluster.apps().read_namespaced_deployment(FULLNAME, namespace).spec.template.spec.containers[0]
    port = free_port()
    args = [a.replace("0.0.0.0:8080", f"127.0.0.1:{port}") for a in container.args]
    assert f"--namespace={namespace}" in args
    token = cluster.service_account_token(namespace, FULLNAME)  # the chart's ServiceAccount (exists already)
    env = {
        **os.environ,
        **{e.name: e.value for e in container.env if e.value is not None},
        "KUBECONFIG": str(cluster.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig")),
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
    }
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        # The image's ENTRYPOINT is fmbench-k8s (fmbench_k8s.cli:main); the args are the container's.
        proc = subprocess.Popen(
            [sys.executable, "-m", "fmbench_k8s.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _drive_a_benchmark(cluster, namespace, port, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    print(text[-5000:])
    assert "Forbidden" not in text and " 403" not in text, "the chart's RBAC denied the operator something"


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _drive_a_benchmark(cluster: TestCluster, namespace: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    cluster.wait_for(lambda: proc.poll() is not None or _healthz(port), timeout=60, description="kopf /healthz")
    assert proc.poll() is None, "the operator exited"
    name = "chart-rbac"
    cluster.custom().create_namespaced_custom_object(
        "fmbench.io", "v1alpha1", namespace, "benchmarks", _benchmark(name)
    )
    # Deploying may last only one tick; Running shows just as well that the run started.
    cluster.wait_for(
        lambda: _phase(cluster, namespace, name) in ("Deploying", "Running") or None, timeout=60,
        description="phase Deploying or Running",
    )  # fmt: skip
    apps, core = cluster.apps(), cluster.core()
    server = cluster.wait_for(
        lambda: _read(lambda: apps.read_namespaced_deployment(f"{name}-g6e-server", namespace)),
        description="model server Deployment",
    )
    assert server.spec.template.spec.node_selector == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}
    runner = cluster.wait_for(lambda: _read(lambda: core.read_namespaced_service_account(f"{name}-runner", namespace)))
    assert runner.metadata.annotations == {"eks.amazonaws.com/role-arn": RUNNER_ROLE}  # FMBENCH_RUNNER_SA_ANNOTATIONS
    # kwok makes the model server Ready; the operator moves on and creates the load generator Jobs.
    cluster.wait_for(
        lambda: _phase(cluster, namespace, name) == "Running" or None, timeout=120, description="phase Running"
    )
    batch = cluster.batch()
    job = cluster.wait_for(lambda: _read(lambda: batch.read_namespaced_job(f"{name}-g6e-lg-workers", namespace)))
    assert job.spec.template.spec.containers[0].image == "example.com/fmbench-k8s:test"  # FMBENCH_IMAGE
    # kopf posts events asynchronously: the status may show Running before its event exists.
    cluster.wait_for(
        lambda: {"Deploying", "Running"} <= cluster.event_reasons(namespace, name) or None,
        timeout=30,
        description="Deploying and Running events",
    )
    assert _healthz(port)  # what the livenessProbe asks


# --------------------------------------------------------------------------- cluster mode + monitoring

_STAND_IN = {"PodMonitor": "podmonitors", "ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}


def _monitoring_stand_in_crds() -> list[JSON]:
    """Loose stand-ins for the Prometheus Operator's CRDs: only what makes the API server serve
    monitoring.coreos.com/v1 (the chart's objects are checked by promtool and the contract tests)."""
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                },
                            }
                        },
                    }
                ],
            },
        }
        for kind, plural in _STAND_IN.items()
    ]


def test_cluster_mode_with_the_prometheus_operator_api(cluster: TestCluster, namespace: str) -> None:
    cluster.apply_manifest(_monitoring_stand_in_crds())
    cluster.wait_for(lambda: _served(cluster), description="monitoring.coreos.com/v1 to be served")
    values = {**VALUES, "watch": {"mode": "cluster"}, "monitoring": {"labels": {"release": "kps"}}}
    installing = _install(cluster, namespace, values, release="fmbc")
    next(installing)
    try:
        sa = "fmbc-fmbench-k8s"
        other = "some-team"
        assert _can(cluster, (namespace, sa), "create", "deployments.apps", other)
        assert _can(cluster, (namespace, sa), "watch", "benchmarks.fmbench.io")
        assert not _can(cluster, (namespace, sa), "get", "secrets", other)
        args = cluster.apps().read_namespaced_deployment(sa, namespace).spec.template.spec.containers[0].args
        assert "--all-namespaces" in args
        custom = cluster.custom()
        monitors = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "podmonitors")
        assert sorted(m["metadata"]["name"] for m in monitors["items"]) == [f"{sa}-load-workers", f"{sa}-model-servers"]
        assert all(m["spec"]["namespaceSelector"] == {"any": True} for m in monitors["items"])
        rules = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "prometheusrules")
        assert [r["metadata"]["labels"]["release"] for r in rules["items"]] == ["kps"]
        dashboards = cluster.core().list_namespaced_config_map(namespace, label_selector="grafana_dashboard=1").items
        assert len(dashboards) == 4
    finally:
        next(installing, None)


def _served(cluster: TestCluster) -> bool:
    try:
        doc = raw_request(cluster.admin, "GET", "/apis/monitoring.coreos.com/v1")
    except ApiException:
        return False
    return {r["name"] for r in doc.get("resources", [])} >= set(_STAND_IN.values())


def test_karpenter_node_pools_pass_karpenters_own_schema_and_go_with_the_release(
    cluster: TestCluster, namespace: str
) -> None:
    """Capacity on demand (docs/install.md): the chart's NodePools, applied to an API server that
    serves Karpenter's real v1 CRDs (their OpenAPI schema and CEL rules), and gone on uninstall."""
    install_karpenter_crds(cluster)
    custom = cluster.custom()

    def pools() -> dict[str, JSON]:
        items = custom.list_cluster_custom_object("karpenter.sh", "v1", "nodepools")["items"]
        return {p["metadata"]["name"]: p for p in items}

    values = {**VALUES, "karpenter": {"enabled": True, "consolidateAfter": "10m"}}
    installing = _install(cluster, namespace, values, release="fmbk")
    next(installing)
    try:
        got = pools()
        assert sorted(got) == ["fmbench-gpu", "fmbench-neuron"]
        gpu = got["fmbench-gpu"]["spec"]
        requirements = {r["key"]: r["values"] for r in gpu["template"]["spec"]["requirements"]}
        assert requirements["karpenter.sh/capacity-type"] == ["on-demand", "spot"]
        assert "g6e.2xlarge" in requirements["node.kubernetes.io/instance-type"]
        assert gpu["template"]["spec"]["taints"] == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
        assert gpu["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": "default",
        }
        # (the budgets are Karpenter's schema default, filled in by the API server: its CRD is the real one)
        assert gpu["disruption"] == {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "10m",
            "budgets": [{"nodes": "10%"}],
        }
        assert gpu["limits"] == {"nvidia.com/gpu": "16"}
        env = (
            cluster.apps()
            .read_namespaced_deployment("fmbk-fmbench-k8s", namespace)
            .spec.template.spec.containers[0]
            .env
        )
        assert {e.name: e.value for e in env}["FMBENCH_KARPENTER"] == "true"
    finally:
        next(installing, None)
    assert pools() == {}, "helm uninstall leaves no NodePool behind"
