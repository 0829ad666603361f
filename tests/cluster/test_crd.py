"""The CRD on a real API server: every sample accepted, every corpus case rejected by the
server's own schema/CEL validation with a message naming the same field as offline validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.cluster.crd import install_crd
from tests.cluster.fixtures import TestCluster
from tests.corpus import REPO, InvalidCase, invalid_cases, repo_benchmark_files


@pytest.fixture(scope="module")
def crd(cluster: TestCluster) -> TestCluster:
    install_crd(cluster)
    return cluster


def _server_message(err: ApiException) -> str:
    body: dict[str, Any] = json.loads(err.body or "{}")
    causes = [f"{c.get('field')}: {c.get('message')}" for c in (body.get("details") or {}).get("causes") or []]
    return str(body.get("message", "")) + "\n" + "\n".join(causes)


@pytest.mark.parametrize("path", repo_benchmark_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_sample_is_accepted_by_the_api_server(crd: TestCluster, path: Any) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Benchmark":
            created = crd.dry_run_create("default", doc)
            assert created["spec"]["variants"][0]["name"] == doc["spec"]["variants"][0]["name"]


def test_an_extra_body_of_any_json_is_kept_as_given(crd: TestCluster) -> None:
    """extraBody values are free JSON: the API server must keep nested objects, not prune them."""
    doc = yaml.safe_load((REPO / "crds/samples/openai-endpoint.yaml").read_text())
    extra = [
        {"name": "chat_template_kwargs", "value": {"enable_thinking": False, "depth": {"x": [1, "two", None]}}},
        {"name": "top_k", "value": 20},
    ]
    doc["spec"]["variants"][0]["endpoint"]["request"] = {"extraBody": extra}
    created = crd.dry_run_create("default", doc)
    assert created["spec"]["variants"][0]["endpoint"]["request"]["extraBody"] == extra


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c.case)
def test_invalid_benchmark_is_rejected_by_the_api_server_naming_the_field(crd: TestCluster, case: InvalidCase) -> None:
    with pytest.raises(ApiException) as info:
        crd.dry_run_create("default", copy.deepcopy(case.doc))
    # 422: schema/CEL; 400: unknown fields under strict field validation (kubectl's default)
    assert info.value.status in (400, 422), info.value.body
    message = _server_message(info.value)
    assert case.field in message  # the server spells paths as we do: spec.variants[0].engine, message


def test_the_spec_is_immutable_once_created(crd: TestCluster) -> None:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["metadata"]["name"] = "immutable"
    custom: Any = crd.custom()
    custom.create_namespaced_custom_object("fmbench.io", "v1alpha1", "default", "benchmarks", doc)
    try:
        with pytest.raises(ApiException) as info:
            custom.patch_namespaced_custom_object(
                "fmbench.io", "v1alpha1", "default", "benchmarks", "immutable",
                {"spec": {"workload": {"requestsPerMinute": 10}}},
            )  # fmt: skip
        assert "spec is immutable" in _server_message(info.value)
        status = {"status": {"phase": "Running", "message": "status stays writable"}}
        custom.patch_namespaced_custom_object_status(
            "fmbench.io", "v1alpha1", "default", "benchmarks", "immutable", status
        )
    finally:
        custom.delete_namespaced_custom_object("fmbench.io", "v1alpha1", "default", "benchmarks", "immutable")


def test_printer_columns_and_short_name(crd: TestCluster) -> None:
    from kubernetes import client

    ext: Any = client.ApiextensionsV1Api(crd.admin)
    got = ext.read_custom_resource_definition("benchmarks.fmbench.io")
    assert got.spec.names.short_names == ["fmb"]
    columns = [c.name for c in got.spec.versions[0].additional_printer_columns]
    assert columns[:5] == ["Phase", "Recommendation", "Type", "Instances", "$/1k req"]
