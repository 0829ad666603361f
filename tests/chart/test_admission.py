"""The chart's admission policy on the real API server: a Benchmark can name only Secrets, volume
claims and prompt ConfigMaps its author may read, and none is created in a kube-* namespace
(docs/security.md).

Two users may create Benchmarks in the namespace; only one may read the Secret `hf-token`, the
claim `weights` and the ConfigMap `prompts`. The
test acts as each of them through impersonation, exactly as `kubectl --as` would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.test_install import VALUES, _install
from tests.cluster.clusterkit import ApiException
from tests.cluster.fixtures import TestCluster, delete_namespace

pytestmark = pytest.mark.cluster

READER, OTHER = "alice@example.com", "mallory@example.com"


def _benchmark(name: str, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "variants": [{"name": "a", "instanceType": "g5.2xlarge", "engine": "vllm"}],
            "workload": {"requestsPerMinute": 60, "promptTokens": {"mean": 64}, "outputTokens": {"mean": 16}},
            "slo": {"latency": {"maxSeconds": 2.0}},
            "report": {"s3": {"bucket": "results"}},
        },
    }


def _as(cluster: TestCluster, user: str) -> Any:
    client = cluster.api_client()
    client.set_default_header("Impersonate-User", user)
    return client


def _grant(cluster: TestCluster, namespace: str) -> None:
    rbac = cluster.rbac()
    roles = {
        "benchmark-author": [{"apiGroups": ["fmbench.io"], "resources": ["benchmarks"], "verbs": ["create", "get"]}],
        "hf-token-reader": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hf-token"], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["persistentvolumeclaims"],
                "resourceNames": ["weights"],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["prompts"], "verbs": ["get"]},
        ],
    }
    members = {"benchmark-author": [READER, OTHER], "hf-token-reader": [READER]}
    for role, rules in roles.items():
        rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": rules})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in members[role]
                ],
            },
        )


@pytest.fixture(scope="module")
def policy(cluster: TestCluster) -> Iterator[str]:
    """A namespace with the chart installed (admission on) and the two users' rights: one install
    for every test here."""
    namespace = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    cluster.core().create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"}, "stringData": {"token": "t"}})
    _grant(cluster, namespace)
    installing = _install(cluster, namespace, {**VALUES, "admission": {"enabled": True}}, release="fmba")
    next(installing)
    try:
        yield namespace
    finally:
        next(installing, None)
        delete_namespace(cluster, namespace)


def _create(cluster: TestCluster, user: str, namespace: str, body: dict[str, Any]) -> None:
    client = _as(cluster, user)
    try:
        cluster.custom(client).create_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks", body)
    finally:
        client.close()


def _refusal(cluster: TestCluster, user: str, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        _create(cluster, user, namespace, body)
    assert caught.value.status in (403, 422), caught.value.body
    return str(caught.value.body)


def test_a_benchmark_names_only_secrets_its_author_may_read(cluster: TestCluster, policy: str) -> None:
    namespace = policy
    hf = {"name": "org/model", "tokenSecretRef": {"name": "hf-token"}}

    message = _first_refusal(cluster, OTHER, namespace, _benchmark("stolen", hf))
    assert f"{OTHER} may not get every Secret it names (hf-token) in namespace {namespace}" in message, message

    # The same spec by the Secret's reader is accepted; without a Secret, so is the other user's.
    _create(cluster, READER, namespace, _benchmark("mine", hf))
    _create(cluster, OTHER, namespace, _benchmark("public", {"name": "org/model"}))
    # Every reference is checked: an endpoint's API key and a variant's own model token too.
    body = _benchmark("sneaky", {"name": "org/model"})
    body["spec"]["variants"] += [
        {"name": "b", "instanceType": "g5.2xlarge", "engine": "vllm", "model": {**hf, "tokenSecretRef": {"name": "x"}}},
        {"name": "c", "endpoint": {"api": "openai-chat", "url": "https://api.example.com/v1",
                                   "apiKeySecretRef": {"name": "hf-token"}}, "pricePerHour": 1.0},
    ]  # fmt: skip
    assert f"{OTHER} may not get every Secret it names (x, hf-token)" in _refusal(cluster, OTHER, namespace, body)
    _refusal(cluster, READER, namespace, body)  # the reader may get hf-token, not x
    # and an LLM judge's API key (the analysis sends it to the judge's URL)
    judged = _benchmark("judged", {"name": "org/model"})
    judged["spec"]["workload"]["dataset"] = {"uri": "s3://b/qa.jsonl", "referenceField": "answer"}
    judge = {"name": "j", "url": "https://judge.example.com/v1", "model": "m", "apiKeySecretRef": {"name": "hf-token"}}
    judged["spec"]["evaluation"] = {"metrics": ["judge"], "judging": {"judges": [judge]}}
    assert f"{OTHER} may not get every Secret it names (hf-token)" in _refusal(cluster, OTHER, namespace, judged)
    _create(cluster, READER, namespace, judged)


def test_a_benchmark_mounts_only_volume_claims_its_author_may_read(cluster: TestCluster, policy: str) -> None:
    namespace = policy
    cached = {"name": "org/model", "cache": {"claimName": "weights"}}
    message = _first_refusal(cluster, OTHER, namespace, _benchmark("cached", cached))
    assert f"{OTHER} may not get every PersistentVolumeClaim it names as model.cache (weights)" in message, message
    _create(cluster, READER, namespace, _benchmark("cached", cached))
    # a variant's own model is checked too
    body = _benchmark("cached-variant", {"name": "org/model"})
    body["spec"]["variants"][0]["model"] = {"name": "org/model", "cache": {"claimName": "other"}}
    assert "(other)" in _refusal(cluster, READER, namespace, body)


def test_a_benchmark_reads_prompts_only_from_configmaps_its_author_may_read(cluster: TestCluster, policy: str) -> None:
    namespace = policy
    body = _benchmark("prompted", {"name": "org/model"})
    body["spec"]["workload"]["dataset"] = {"uri": "configmap://prompts/data.jsonl"}
    message = _first_refusal(cluster, OTHER, namespace, body)
    assert f"{OTHER} may not get ConfigMap prompts in namespace {namespace}" in message, message
    _create(cluster, READER, namespace, body)


def test_no_benchmark_is_created_in_a_kube_namespace(cluster: TestCluster, policy: str) -> None:
    body = _benchmark("system", {"name": "org/model"})
    message = _first_refusal(cluster, None, "kube-public", body)
    assert "metadata.namespace: Benchmarks do not run in kube-* namespaces" in message, message


def _first_refusal(cluster: TestCluster, user: str | None, namespace: str, body: dict[str, Any]) -> str:
    """The refusal of ``body``, once the API server enforces the policy (it loads it a moment
    after the install)."""
    refusal: str = cluster.wait_for(
        lambda: _refused_or_removed(cluster, user, namespace, body),
        timeout=60, description="the admission policy to be enforced",
    )  # fmt: skip
    return refusal


def _refused_or_removed(cluster: TestCluster, user: str | None, namespace: str, body: dict[str, Any]) -> str | None:
    """The refusal; or None, after deleting what was created (the policy is enforced as soon as the
    API server has loaded it: callers poll)."""
    try:
        if user is None:
            cluster.custom().create_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks", body)
        else:
            _create(cluster, user, namespace, body)
    except ApiException as err:
        return str(err.body)
    name = body["metadata"]["name"]
    cluster.custom().delete_namespaced_custom_object("fmbench.io", "v1alpha1", namespace, "benchmarks", name)
    return None
