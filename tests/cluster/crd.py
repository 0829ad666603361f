"""Install the project's CRD into the test cluster and wait until its group is served."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.cluster.clusterkit import Cluster
from tests.corpus import REPO

CRD = REPO / "crds" / "fmbench.io_benchmarks.yaml"


def install_crd(cluster: Cluster) -> None:
    cluster.apply_manifest(CRD)
    custom: Any = cluster.custom()

    def served() -> bool:  # Established precedes the group appearing in discovery by a moment
        try:
            custom.list_namespaced_custom_object("fmbench.io", "v1alpha1", "default", "benchmarks")
            return True
        except ApiException:
            return False

    cluster.wait_for(served, description="fmbench.io/v1alpha1 to be served")
