"""The pods the operator creates from the project image pass the Pod Security Standards
"restricted" profile, as enforced by the real API server's PodSecurity admission. (Model server
pods run third-party engine images, whose users the operator does not control.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from fmbench_k8s.api import parse_benchmark
from fmbench_k8s.operator import builders
from fmbench_k8s.operator.builders import OperatorConfig
from tests.cluster.fixtures import TestCluster
from tests.corpus import REPO

CFG = OperatorConfig(image="example.com/fmbench-k8s:test")
UID = "00000000-0000-0000-0000-000000000001"


def _pods(namespace: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["report"] = {"s3": {"bucket": "results"}}
    bench = parse_benchmark(doc)
    v = bench.spec.variants[0]
    owners = (
        builders.loadgen_master_job(bench, v, UID, "r", CFG),
        builders.loadgen_workers_job(bench, v, UID, "r", CFG),
        builders.analysis_job(bench, UID, "r", CFG),
        builders.server_deployment(bench, v, UID, CFG),  # engine simulator: the project image
    )
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in owners}


def test_project_pods_are_admitted_under_restricted(cluster: TestCluster, namespace: str) -> None:
    core: Any = cluster.core()
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "simulator-dry-run-runner"}})
    for name, spec in _pods(namespace).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name[:50] + "-x"}, "spec": copy.deepcopy(spec)}
        cluster.dry_run_create(namespace, pod)  # raises on a PodSecurity violation


def test_the_namespace_label_really_enforces(cluster: TestCluster, namespace: str) -> None:
    core: Any = cluster.core()
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    root = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip
    with pytest.raises(ApiException) as err:
        cluster.dry_run_create(namespace, root)
    assert err.value.status == 403 and "restricted" in (err.value.body or "")
