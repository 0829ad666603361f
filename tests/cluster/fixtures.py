"""pytest wiring for the real control plane (``cluster`` fixture).

The session-scoped ``cluster`` fixture builds the binaries (``build.sh``; a
no-op with a warm cache), creates the real node's network (tests/cluster/node.py),
starts etcd/kube-apiserver/kube-controller-manager/kube-scheduler/kwok with the
API server on the host end of that network, creates the EKS-shaped kwok nodes
of ``nodes.yaml`` and yields a :class:`TestCluster`. The ``real_node`` fixture
adds the real node (containerd, kubelet, kube-proxy, CoreDNS, the project's
image) the first time a test asks for it. Neither skips: if something cannot
be built or started, every test that uses it fails with the reason.

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
from tests.cluster.images import ImageError, pause_image, project_image
from tests.cluster.node import GPU_NODE_SHAPE, NodeNetwork, RealNode

REAL_NODE = "fmbench-real-0"
SPARE_NODE = "fmbench-real-1"  # a second node a test may start and stop (identities exist for both)


class TestCluster(Cluster):
    """:class:`Cluster` plus the :class:`ControlPlane` that runs it (if ours) and the network of its
    real node."""

    __test__ = False  # not a test class

    def __init__(
        self,
        kubeconfig: Path,
        node_groups: Sequence[NodeGroup],
        control_plane: ControlPlane | None = None,
        network: NodeNetwork | None = None,
    ) -> None:
        super().__init__(kubeconfig, node_groups)
        self.control_plane = control_plane
        self.network = network
        self.real_node: RealNode | None = None


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
    try:
        network = NodeNetwork.create()
    except ControlPlaneError as exc:
        pytest.fail(f"cannot create the real node's network (needs root and iproute2): {exc}", pytrace=False)
    cp = ControlPlane(
        bin_dir,
        tmp_path_factory.mktemp("controlplane"),
        address=network.host_ip,
        identities={**RealNode.identities(REAL_NODE), **RealNode.identities(SPARE_NODE)},
    )
    try:
        cp.start()
    except ControlPlaneError as exc:
        error = f"cannot start the test control plane (logs in {cp.log_dir}): {exc}"
    if error:
        network.delete()
        pytest.fail(error, pytrace=False)
    handle = TestCluster(cp.kubeconfig, groups, cp, network)
    try:
        handle.create_nodes(groups)
        yield handle
    finally:
        if handle.real_node is not None:
            handle.real_node.stop()
        handle.close()
        cp.stop()
        network.delete()


@pytest.fixture(scope="session")
def real_node(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> RealNode:
    """The cluster's real node (started once per session, stopped with the cluster), with the
    project's image built from the Dockerfile's recipe and imported."""
    if cluster.real_node is not None:
        return cluster.real_node
    if cluster.control_plane is None or cluster.network is None:
        pytest.fail("the real node needs the session's own control plane (unset FMBENCH_CLUSTER_KUBECONFIG)")
    error = ""
    try:
        images = [project_image()]
        pause = pause_image()
    except ImageError as exc:
        error = f"cannot build the node's images: {exc}"
    if error:
        pytest.fail(error, pytrace=False)
    node = RealNode(
        REAL_NODE, cluster.network, cluster.control_plane, tmp_path_factory.mktemp("node"), shape=GPU_NODE_SHAPE
    )
    try:
        node.start(images, pause, cluster.admin, timeout=180)
    except ControlPlaneError as exc:
        error = f"cannot start the real node (logs in {node.log_dir}): {exc}"
    if error:
        pytest.fail(error, pytrace=False)
    cluster.real_node = node
    return node


@pytest.fixture
def namespace(cluster: TestCluster) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards - and gone before
    the next test starts, so pods of one test never hold the GPUs another test schedules onto."""
    name = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    delete_namespace(cluster, name)


def delete_namespace(cluster: TestCluster, name: str) -> None:
    """Delete a test's namespace and wait until it is gone."""
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
