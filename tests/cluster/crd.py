"""Install the project's CRD (and the Prometheus Operator's ScrapeConfig, Karpenter's NodePool and
EC2NodeClass) into the test cluster and wait until each is served."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.cluster.clusterkit import Cluster
from tests.corpus import REPO

CRD = REPO / "crds" / "fmbench.io_benchmarks.yaml"


def install_crd(cluster: Cluster) -> None:
    cluster.apply_manifest(CRD)
    _wait_served(cluster, "fmbench.io", "v1alpha1", "benchmarks")


def _wait_served(cluster: Cluster, group: str, version: str, plural: str, *, namespaced: bool = True) -> None:
    custom: Any = cluster.custom()

    def served() -> bool:  # Established precedes the group appearing in discovery by a moment
        try:
            if namespaced:
                custom.list_namespaced_custom_object(group, version, "default", plural)
            else:
                custom.list_cluster_custom_object(group, version, plural)
            return True
        except ApiException:
            return False

    cluster.wait_for(served, description=f"{group}/{version} {plural} to be served")


MONITORING_MODULE = REPO / "tests" / "cluster" / "go" / "monitoring"
KARPENTER_MODULE = REPO / "tests" / "cluster" / "go" / "karpenter"


def _module_dir(where: Path, module: str) -> Path:
    """The source of ``module`` as pinned by ``where``'s go.sum, from Go's module cache."""
    go = shutil.which("go")
    if go is None:
        raise AssertionError("go is not on PATH: the cluster tests need it (make cluster-build installs nothing else)")
    out = subprocess.run(
        [go, "mod", "download", "-json", module],
        cwd=where, env={**os.environ, "GOFLAGS": "-mod=mod"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise AssertionError(f"could not fetch the Go module {module}: {info.get('Error') or out.stderr}")
    return Path(info["Dir"])


def monitoring_crd(plural: str) -> Path:
    """The Prometheus Operator's own CRD for ``plural`` (scrapeconfigs, podmonitors...), from its Go
    module (pinned by tests/cluster/go/monitoring/go.sum)."""
    root = _module_dir(MONITORING_MODULE, "github.com/prometheus-operator/prometheus-operator")
    return root / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{plural}.yaml"


def karpenter_crds() -> list[Path]:
    """Karpenter's own NodePool and EC2NodeClass CRDs, from its AWS provider's Go module (pinned by
    tests/cluster/go/karpenter/go.sum)."""
    crds = _module_dir(KARPENTER_MODULE, "github.com/aws/karpenter-provider-aws") / "pkg" / "apis" / "crds"
    return [crds / "karpenter.sh_nodepools.yaml", crds / "karpenter.k8s.aws_ec2nodeclasses.yaml"]


def install_scrape_config_crd(cluster: Cluster) -> None:
    """The real ScrapeConfig CRD (monitoring.coreos.com/v1alpha1), served when this returns."""
    cluster.apply_manifest(monitoring_crd("scrapeconfigs"))
    _wait_served(cluster, "monitoring.coreos.com", "v1alpha1", "scrapeconfigs")


def install_karpenter_crds(cluster: Cluster) -> None:
    """Karpenter's real NodePool and EC2NodeClass CRDs (v1), served when this returns."""
    for crd in karpenter_crds():
        cluster.apply_manifest(crd)
    _wait_served(cluster, "karpenter.sh", "v1", "nodepools", namespaced=False)
    _wait_served(cluster, "karpenter.k8s.aws", "v1", "ec2nodeclasses", namespaced=False)
