"""The test control plane behaves like a real cluster with EKS-shaped nodes.

Scheduling, garbage collection, Jobs and RBAC are done by the real
kube-scheduler, kube-controller-manager and kube-apiserver; kwok only plays
the kubelet. Every wait polls with a deadline (clusterkit.wait_for).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.clusterkit import ApiException, WaitTimeoutError, node_manifests, wait_for
from tests.cluster.controlplane import ControlPlane, build_binaries
from tests.cluster.fixtures import TestCluster

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _pod_template(labels: dict[str, str], resources: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/fmbench/fake:1"}
    if resources:
        container["resources"] = resources
    return {"metadata": {"labels": labels}, "spec": {"containers": [container], **spec}}


def _deployment(name: str, template: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": template["metadata"]["labels"]},
            "template": template,
        },
    }


def _pods(cluster: TestCluster, namespace: str, selector: str) -> list[Any]:
    return list(cluster.core().list_namespaced_pod(namespace, label_selector=selector).items)


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _gone(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


# --------------------------------------------------------------------------- nodes


def test_nodes_have_eks_shape(cluster: TestCluster) -> None:
    nodes = {n.metadata.name: n for n in cluster.core().list_node(label_selector="type=kwok").items}
    expected = node_manifests(cluster.node_groups)
    assert set(nodes) == {m["metadata"]["name"] for m in expected}

    by_type = {n.metadata.labels["node.kubernetes.io/instance-type"]: n for n in nodes.values()}
    assert {
        "g5.2xlarge",
        "g6e.2xlarge",
        "g5.12xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
        "inf2.8xlarge",
        "inf2.48xlarge",
        "trn1.32xlarge",
        "m5.xlarge",
        "m6i.2xlarge",
    } <= set(by_type)
    gpus = {
        t: by_type[t].status.allocatable.get("nvidia.com/gpu")
        for t in ("g5.2xlarge", "g6e.2xlarge", "g5.12xlarge", "p4d.24xlarge", "p5.48xlarge")
    }
    assert gpus == {"g5.2xlarge": "1", "g6e.2xlarge": "1", "g5.12xlarge": "4", "p4d.24xlarge": "8", "p5.48xlarge": "8"}
    neuron = {
        t: by_type[t].status.capacity.get("aws.amazon.com/neuron")
        for t in ("inf2.8xlarge", "inf2.48xlarge", "trn1.32xlarge")
    }
    assert neuron == {"inf2.8xlarge": "1", "inf2.48xlarge": "12", "trn1.32xlarge": "16"}

    for node in nodes.values():
        labels = node.metadata.labels
        for key in ("eks.amazonaws.com/nodegroup", "topology.kubernetes.io/zone"):
            assert labels.get(key), (node.metadata.name, key)
        assert labels["karpenter.sh/capacity-type"] == "on-demand"
        assert labels["kubernetes.io/arch"] == "amd64"
        assert labels["kubernetes.io/os"] == "linux"
        assert int(node.status.allocatable["pods"]) > 0
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
        alloc = node.status.allocatable
        if "nvidia.com/gpu" in alloc:
            assert taints == {("nvidia.com/gpu", "true", "NoSchedule")}
        elif "aws.amazon.com/neuron" in alloc:
            assert taints == {("aws.amazon.com/neuron", "true", "NoSchedule")}
        else:
            assert taints == set()


# --------------------------------------------------------------------------- scheduling


def test_gpu_deployment_lands_on_g6e_and_becomes_ready(cluster: TestCluster, namespace: str) -> None:
    template = _pod_template(
        {"app": "vllm"},
        {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "2", "memory": "8Gi"}},
        tolerations=[GPU_TOLERATION],
        nodeSelector={"node.kubernetes.io/instance-type": "g6e.2xlarge"},
    )
    cluster.apps().create_namespaced_deployment(namespace, _deployment("vllm", template))

    pods = wait_for(
        lambda: [p for p in _pods(cluster, namespace, "app=vllm") if _ready(p)],
        timeout=60,
        description="the vLLM pod to become Ready",
    )
    assert pods[0].spec.node_name == "gpu-g6e-2xlarge-0"
    assert pods[0].status.phase == "Running"
    wait_for(
        lambda: cluster.apps().read_namespaced_deployment_status("vllm", namespace).status.available_replicas == 1,
        timeout=60,
        description="the Deployment to report 1 available replica",
    )


def test_more_gpus_than_any_node_has_stays_pending(cluster: TestCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        **_pod_template({"app": "greedy"}, {"limits": {"nvidia.com/gpu": "9"}}, tolerations=[GPU_TOLERATION]),
    }
    pod["metadata"]["name"] = "greedy"
    cluster.core().create_namespaced_pod(namespace, pod)

    def unschedulable() -> Any:
        p = cluster.core().read_namespaced_pod("greedy", namespace)
        return next(
            (c for c in p.status.conditions or [] if c.type == "PodScheduled" and c.reason == "Unschedulable"), None
        )

    cond = wait_for(unschedulable, timeout=60, description="the scheduler to mark the pod Unschedulable")
    assert cond.status == "False"
    assert "Insufficient nvidia.com/gpu" in cond.message
    p = cluster.core().read_namespaced_pod("greedy", namespace)
    assert p.status.phase == "Pending"
    assert not p.spec.node_name


# --------------------------------------------------------------------------- garbage collection


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(cluster: TestCluster, namespace: str) -> None:
    apps = cluster.apps()
    apps.create_namespaced_deployment(namespace, _deployment("web", _pod_template({"app": "web"}), replicas=2))
    wait_for(
        lambda: len([p for p in _pods(cluster, namespace, "app=web") if _ready(p)]) == 2,
        timeout=60,
        description="2 Ready web pods",
    )
    rs = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(rs) == 1
    assert rs[0].metadata.owner_references[0].kind == "Deployment"

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=web").items,
        timeout=60,
        description="the ReplicaSet to be garbage-collected",
    )
    wait_for(
        lambda: not _pods(cluster, namespace, "app=web"), timeout=60, description="the pods to be garbage-collected"
    )


def test_deleting_an_owner_garbage_collects_a_dependent_configmap(cluster: TestCluster, namespace: str) -> None:
    core = cluster.core()
    owner = core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}, "data": {"a": "1"}}
    )
    core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            },
        },
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: _gone(core.read_namespaced_config_map, "dependent", namespace),
        timeout=60,
        description="the dependent ConfigMap to be garbage-collected",
    )


# --------------------------------------------------------------------------- jobs


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": _pod_template({"job": name}, restartPolicy="Never")},
    }


def _job_condition(cluster: TestCluster, namespace: str, name: str, ctype: str) -> Any:
    job = cluster.batch().read_namespaced_job_status(name, namespace)
    return next((c for c in job.status.conditions or [] if c.type == ctype and c.status == "True"), None)


def test_job_pod_completed_by_helper_completes_the_job(cluster: TestCluster, namespace: str) -> None:
    cluster.batch().create_namespaced_job(namespace, _job("bench"))
    pod = wait_for(
        lambda: [p for p in _pods(cluster, namespace, "job=bench") if p.status.phase == "Running"],
        timeout=60,
        description="the Job's pod to run",
    )[0]
    # kwok does not finish Job pods by itself: the pod stays Running until told.
    assert _job_condition(cluster, namespace, "bench", "Complete") is None

    done = cluster.complete_pod(namespace, pod.metadata.name, message='{"requests": 100}')
    assert done["status"]["phase"] == "Succeeded"
    wait_for(
        lambda: _job_condition(cluster, namespace, "bench", "Complete"),
        timeout=60,
        description="the Job to be Complete",
    )
    term = cluster.core().read_namespaced_pod(pod.metadata.name, namespace).status.container_statuses[0].state
    assert json.loads(term.terminated.message) == {"requests": 100}
    assert term.terminated.exit_code == 0


def test_job_pod_failed_by_helper_fails_the_job(cluster: TestCluster, namespace: str) -> None:
    cluster.batch().create_namespaced_job(namespace, _job("crash"))
    pod = wait_for(
        lambda: [p for p in _pods(cluster, namespace, "job=crash") if p.status.phase == "Running"],
        timeout=60,
        description="the Job's pod to run",
    )[0]
    cluster.complete_pod(namespace, pod.metadata.name, succeeded=False, exit_code=3, message="boom")
    cond = wait_for(
        lambda: _job_condition(cluster, namespace, "crash", "Failed"), timeout=60, description="the Job to be Failed"
    )
    assert cond.reason == "BackoffLimitExceeded"


# --------------------------------------------------------------------------- RBAC


def test_rbac_forbids_a_serviceaccount_without_permissions(cluster: TestCluster, namespace: str) -> None:
    token = cluster.service_account_token(namespace, "nobody")
    with cluster.api_client(token=token) as client:
        core = cluster.core(client)
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod(namespace)
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in str(err.value.body)

        rbac = cluster.rbac()
        rbac.create_namespaced_role(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "nobody-reads"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
            },
        )

        def allowed() -> bool:
            try:
                core.list_namespaced_pod(namespace)
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        wait_for(allowed, timeout=30, description="the RoleBinding to take effect")
        with pytest.raises(ApiException) as err:
            core.list_namespaced_secret(namespace)
        assert err.value.status == 403


# --------------------------------------------------------------------------- manifests


WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.fmbench.io
spec:
  group: test.fmbench.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "self.size <= self.max"
              message: "size must not exceed max"
            properties:
              size: {type: integer, minimum: 1}
              max: {type: integer, default: 10}
"""


def test_apply_manifest_and_server_side_dry_run(cluster: TestCluster, namespace: str, tmp_path: Path) -> None:
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(WIDGET_CRD)
    applied = cluster.apply_manifest(crd_file)
    assert applied[0]["kind"] == "CustomResourceDefinition"
    cluster.apply_manifest(crd_file)  # idempotent

    good = {"apiVersion": "test.fmbench.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
    out = cluster.dry_run_create(namespace, good)
    assert out["spec"] == {"size": 3, "max": 10}  # defaulted by the server
    assert _gone(cluster.custom().get_namespaced_custom_object, "test.fmbench.io", "v1", namespace, "widgets", "w")

    for spec, fragment in (
        ({}, "spec.size: Required value"),
        ({"size": 0}, "spec.size"),
        ({"size": 11}, "size must not exceed max"),
    ):
        with pytest.raises(ApiException) as err:
            cluster.dry_run_create(namespace, {**good, "spec": spec})
        assert err.value.status == 422, err.value.body
        assert fragment in str(err.value.body), err.value.body

    created = cluster.apply_manifest({**good, "metadata": {"name": "real"}}, namespace=namespace)
    assert created[0]["metadata"]["namespace"] == namespace
    got = cluster.custom().get_namespaced_custom_object("test.fmbench.io", "v1", namespace, "widgets", "real")
    assert got["spec"]["max"] == 10


# --------------------------------------------------------------------------- process hygiene


def test_wait_for_reports_the_last_value() -> None:
    with pytest.raises(WaitTimeoutError, match="last value: 0"):
        wait_for(lambda: 0, timeout=0.3, interval=0.05, description="zero to become truthy")


def test_a_second_control_plane_starts_and_stops_without_leftovers(tmp_path: Path) -> None:
    cp = ControlPlane(build_binaries(), tmp_path / f"cp-{uuid.uuid4().hex[:6]}")
    t0 = time.monotonic()
    cp.start()
    try:
        elapsed = time.monotonic() - t0
        print(f"warm start: {elapsed:.1f}s")
        pids = [c.pid for c in cp.components]
        assert len(pids) == 5
        assert all(c.alive() for c in cp.components)
        assert cp.kubeconfig.is_file()
    finally:
        cp.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} survived stop()"
    assert not (cp.state_dir / "pids.json").exists()
