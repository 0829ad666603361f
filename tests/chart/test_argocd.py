"""Argo CD integration: the Benchmark health check (deploy/argocd/health.lua) run by a real Lua
5.1 interpreter (lupa; Argo CD's gopher-lua is Lua 5.1), the argocd-cm snippet, the Applications."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from lupa import lua51

from fmbench_k8s.api import parse_benchmark
from tests.corpus import REPO

ARGOCD = REPO / "deploy" / "argocd"
HEALTH = ARGOCD / "health.lua"


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua the way Argo CD does: ``obj`` global, a table {status, message} back."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(HEALTH.read_text())
    return {k: str(v) for k, v in dict(result).items()}


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def _bench(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": "b", "generation": 1},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, {"status": "Progressing", "message": "Waiting for the fmbench-k8s operator to pick the Benchmark up"}),
        ({}, {"status": "Progressing", "message": "Waiting for the fmbench-k8s operator to pick the Benchmark up"}),
        ({"phase": "Pending"}, {"status": "Progressing", "message": "Pending"}),
        (
            {"phase": "Deploying", "message": "variant g6e: 0/1 replicas ready"},
            {"status": "Progressing", "message": "Deploying: variant g6e: 0/1 replicas ready"},
        ),
        ({"phase": "Running", "message": ""}, {"status": "Progressing", "message": "Running"}),
        (
            {"phase": "Analyzing", "message": "analysis job running"},
            {"status": "Progressing", "message": "Analyzing: analysis job running"},
        ),
        (
            {"phase": "Verifying", "message": "verifying g6e on g6e.2xlarge × 3"},
            {"status": "Progressing", "message": "Verifying: verifying g6e on g6e.2xlarge × 3"},
        ),
        (
            {"phase": "Failed", "message": "InsufficientAccelerators: 0/12 nodes: Insufficient nvidia.com/gpu"},
            {"status": "Degraded", "message": "InsufficientAccelerators: 0/12 nodes: Insufficient nvidia.com/gpu"},
        ),
        ({"phase": "Failed"}, {"status": "Degraded", "message": "Benchmark failed"}),
        (
            {
                "phase": "Succeeded",
                "recommendation": {
                    "variant": "inf2",
                    "instanceType": "inf2.8xlarge",
                    "instances": 2,
                    "costPerHour": 3.9,
                    "costPer1kRequests": 0.108,
                },
            },
            {"status": "Healthy", "message": "Succeeded: inf2 on inf2.8xlarge x2, $0.1080 per 1k requests"},
        ),
        (
            {
                "phase": "Succeeded",
                "recommendation": {
                    "variant": "bedrock-haiku",
                    "instances": 1.0,
                    "costPerHour": 0.5,
                    "costPer1kRequests": 0.25,
                },
            },
            {"status": "Healthy", "message": "Succeeded: bedrock-haiku x1, $0.2500 per 1k requests"},
        ),
        (
            {"phase": "Succeeded", "message": "no variant meets the SLO"},
            {"status": "Healthy", "message": "no variant meets the SLO"},
        ),
    ],
)
def test_health_across_phases(status: dict[str, Any] | None, expected: dict[str, str]) -> None:
    assert health(_bench(status)) == expected


def test_every_phase_of_the_api_maps_to_an_argo_health() -> None:
    from fmbench_k8s.api.status import PHASES

    for phase in PHASES:
        assert health(_bench({"phase": phase}))["status"] in ("Healthy", "Degraded", "Progressing")


def test_argocd_cm_snippet_carries_health_lua_verbatim() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"] == {
        **cm["metadata"],
        "name": "argocd-cm",
        "namespace": "argocd",
    }
    assert cm["data"]["resource.customizations.health.fmbench.io_Benchmark"] == HEALTH.read_text()


def test_applications_use_server_side_apply_and_never_replace() -> None:
    apps = {p.stem: yaml.safe_load(p.read_text()) for p in ARGOCD.glob("application-*.yaml")}
    assert set(apps) == {"application-operator", "application-benchmarks"}
    for app in apps.values():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        options = app["spec"]["syncPolicy"]["syncOptions"]
        assert "ServerSideApply=true" in options and "Replace=false" in options
    operator = apps["application-operator"]["spec"]["source"]
    assert operator["path"] == "charts/fmbench-k8s" and (REPO / operator["path"] / "Chart.yaml").is_file()
    benchmarks = apps["application-benchmarks"]["spec"]
    assert benchmarks["syncPolicy"]["automated"]["prune"] is False  # finished runs stay
    assert (REPO / benchmarks["source"]["path"]).is_dir()


def test_example_benchmarks_are_valid_and_protected_from_pruning() -> None:
    files = sorted((ARGOCD / "benchmarks").glob("*.yaml"))
    assert files
    for path in files:
        doc = yaml.safe_load(path.read_text())
        parse_benchmark(doc, str(path))
        annotations = doc["metadata"]["annotations"]
        assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false"
        assert annotations["argocd.argoproj.io/compare-options"] == "IgnoreExtraneous"
