"""pytest wiring for the real control plane (``cluster`` fixture).

The session-scoped ``cluster`` fixture builds the binaries (``build.sh``; a
no-op with a warm cache), starts etcd/kube-apiserver/kube-controller-manager/
kube-scheduler/kwok on loopback, creates the EKS-shaped nodes of
``nodes.yaml`` and yields a :class:`TestCluster`. It never skips: if the
binaries cannot be built or the control plane cannot start, every test that
uses it fails with the reason.

Set ``FMBENCH_CLUSTER_KUBECONFIG`` to the kubeconfig of a cluster started with
``make cluster`` to run against it instead of starting a new one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster.clusterkit import Cluster, NodeGroup, load_node_groups
from tests.cluster.controlplane import ControlPlane, ControlPlaneError, build_binaries


class TestCluster(Cluster):
    """:class:`Cluster` plus the :class:`ControlPlane` that runs it (if ours)."""

    __test__ = False  # not a test class

    def __init__(
        self,
        kubeconfig: Path,
        node_groups: Sequence[NodeGroup],
        control_plane: ControlPlane | None = None,
    ) -> None:
        super().__init__(kubeconfig, node_groups)
        self.control_plane = control_plane


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    groups = load_node_groups()
    external = os.environ.get("FMBENCH_CLUSTER_KUBECONFIG")
    if external:
        handle = TestCluster(Path(external), groups)
        yield handle
        handle.close()
        return

    error = ""
    try:
        bin_dir = build_binaries(quiet=True)
    except ControlPlaneError as exc:
        error = f"cannot build the test control plane: {exc}"
    if error:
        pytest.fail(error, pytrace=False)
    cp = ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane"))
    try:
        cp.start()
    except ControlPlaneError as exc:
        error = f"cannot start the test control plane (logs in {cp.log_dir}): {exc}"
    if error:
        pytest.fail(error, pytrace=False)
    handle = TestCluster(cp.kubeconfig, groups, cp)
    try:
        handle.create_nodes(groups)
        yield handle
    finally:
        handle.close()
        cp.stop()


@pytest.fixture
def namespace(cluster: TestCluster) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards - and gone before
    the next test starts, so pods of one test never hold the GPUs another test schedules onto."""
    name = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    core: Any = cluster.core()
    core.delete_namespace(name)
    _release_benchmarks(cluster, name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
            return False
        except ApiException as err:
            return bool(err.status == 404)

    cluster.wait_for(gone, timeout=120, description=f"namespace {name} to be deleted")


def _release_benchmarks(cluster: TestCluster, namespace: str) -> None:
    """Remove the operator's finalizer from Benchmarks left behind: by teardown the test's operator
    has stopped, and (as after uninstalling the operator, docs/operator.md) nothing else would."""
    custom: Any = cluster.custom()
    try:
        items = custom.list_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks")["items"]
    except ApiException as err:
        if err.status == 404:  # the CRD is not installed in this session
            return
        raise
    for item in items:
        if item["metadata"].get("finalizers"):
            patch = {"metadata": {"finalizers": None}}
            custom.patch_namespaced_custom_object(
                "fmbench.io", "v1alpha1", namespace, "benchmarks", item["metadata"]["name"], patch
            )
