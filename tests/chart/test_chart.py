"""The Helm chart rendered and linted by Helm's own Go SDK, its values schema, its RBAC and the
contracts it shares with the operator (CRD, rules file, env, pod labels and ports)."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from fmbench_k8s.api.crd import render_crd
from tests.chart.chartkit import (
    CHART,
    CHART_CRD,
    GENERATED_CRD,
    JSON,
    by_kind,
    kube_version,
    lint,
    notes,
    one,
    rbac_rules,
    render,
    render_objects,
    validate_values,
)

WATCH_MODES: list[dict[str, Any]] = [
    {},
    {"watch": {"mode": "namespaced", "namespaces": ["team-a", "team-b"]}},
    {"watch": {"mode": "cluster", "namespaces": []}},
]
FULL: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/op"}},
    "runner": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/run"}}},
    "operator": {"verbose": True, "extraEnv": [{"name": "X", "value": "1"}]},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tools", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"a": "b"},
    "podLabels": {"team": "ml"},
    "monitoring": {
        "labels": {"release": "kube-prometheus-stack"},
        "modelServers": {"kind": "ServiceMonitor"},
        "instancePrices": {"g6e.2xlarge": 2.242, "inf2.8xlarge": 1.968},
        "dashboards": {"namespace": "monitoring", "labels": {"x": "y"}},
        "rules": {"additionalLabels": {"team": "ml"}},
    },
}
COMBINATIONS = [*WATCH_MODES, FULL, {"monitoring": {"enabled": False}}, {"rbac": {"create": False}}]


def _operator_container(objects: list[JSON]) -> JSON:
    deployment = one(objects, "Deployment")
    containers: list[JSON] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _env(container: JSON) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


# --------------------------------------------------------------------------- CRD


def test_chart_crd_is_byte_identical_to_the_generated_crd() -> None:
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), (
        "charts/fmbench-k8s/crds/ is stale: cp crds/fmbench.io_benchmarks.yaml charts/fmbench-k8s/crds/"
    )
    assert CHART_CRD.read_text() == render_crd(), "the CRD is stale: make crd, then copy it into the chart"


def test_helm_loads_the_crd_from_crds_dir() -> None:
    with helm.Chart.load(CHART) as chart:
        crds = chart.crds
        assert chart.metadata["appVersion"] == "0.1.0" and chart.metadata["apiVersion"] == "v2"
    assert [yaml.safe_load(c["data"])["metadata"]["name"] for c in crds] == ["benchmarks.fmbench.io"]


# --------------------------------------------------------------------------- lint + schema


@pytest.mark.parametrize("values", COMBINATIONS, ids=lambda v: ",".join(sorted(v)) or "defaults")
def test_lint_strict_has_no_findings_above_info(values: dict[str, Any]) -> None:
    report = lint(values)
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report.get("errors"), bad or report["errors"]


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"watch": {"mode": "everywhere"}}, "mode"),
        ({"watch": {"namespaces": ["Not_A_Namespace"]}}, "namespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"operator": {"intervalSeconds": 0}}, "intervalSeconds"),
        ({"operator": {"intervalSecs": 2}}, "intervalSecs"),
        ({"runner": {"serviceAccount": {"annotations": {"a": "b,c"}}}}, "annotations"),
        ({"runner": {"serviceAccount": {"annotations": {"a=b": "c"}}}}, "a=b"),
        ({"monitoring": {"modelServers": {"kind": "Probe"}}}, "kind"),
        ({"monitoring": {"rules": {"errorRatioThreshold": 2}}}, "errorRatioThreshold"),
        ({"monitoring": {"interval": "often"}}, "interval"),
        ({"monitoring": {"instancePrices": {"g6e.2xlarge": "cheap"}}}, "instancePrices"),
        ({"livenessProbe": {"port": 80}}, "port"),
        ({"replicas": 2}, "replicas"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        validate_values(values)
    assert needle in str(err.value)
    with pytest.raises(helm.HelmError):  # and so does rendering (helm install/template)
        render(values)


@pytest.mark.parametrize("values", COMBINATIONS, ids=lambda v: ",".join(sorted(v)) or "defaults")
def test_values_schema_accepts_good_values(values: dict[str, Any]) -> None:
    validate_values(values)


def _schema_paths(schema: JSON, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Keys the chart defines (free-form objects such as securityContext contribute only themselves)."""
    out = set()
    for key, sub in schema.get("properties", {}).items():
        out.add((*prefix, key))
        out |= _schema_paths(sub, (*prefix, key))
    return out


def test_every_value_has_a_double_hash_comment_and_a_schema_entry() -> None:
    """kube-prometheus-stack style: a ``##`` comment right above each key the chart defines."""
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    defined = _schema_paths(schema)
    lines = (CHART / "values.yaml").read_text().splitlines()
    root = yaml.compose("\n".join(lines))
    missing: list[str] = []
    undeclared: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            if key_path not in defined:
                if path in defined and "properties" not in _lookup(schema, path):
                    continue  # inside a free-form object (securityContext, resources, ...)
                undeclared.append(".".join(key_path))
                continue
            above = lines[key_node.start_mark.line - 1].strip() if key_node.start_mark.line else ""
            if not above.startswith("##"):
                missing.append(".".join(key_path))
            walk(value_node, key_path)

    walk(root, ())
    assert not undeclared, f"values.yaml keys missing from values.schema.json: {undeclared}"
    assert not missing, f"values.yaml keys without a '##' comment right above: {missing}"


def _lookup(schema: JSON, path: tuple[str, ...]) -> JSON:
    node = schema
    for key in path:
        node = node["properties"][key]
    return node


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("values", COMBINATIONS, ids=lambda v: ",".join(sorted(v)) or "defaults")
def test_rendered_manifests_validate_against_the_cluster_version_schemas(values: dict[str, Any]) -> None:
    version = kube_version().lstrip("v")
    checked = 0
    for obj in render_objects(values):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRD kinds: checked by test_monitoring.py (promtool, contract with the builders)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {err.message}")
        checked += 1
    assert checked >= 3


def test_default_render_has_the_expected_objects() -> None:
    objects = render_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("ConfigMap") == 4  # dashboards
    for kind in ("ServiceAccount", "Deployment", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("PodMonitor") == 2 and kinds.count("PrometheusRule") == 1
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "fmbench", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "fmb"


def test_operator_deployment_is_hardened() -> None:
    objects = render_objects()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = _operator_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # the only writable path


@pytest.mark.parametrize(
    ("values", "args"),
    [
        ({}, ["--namespace=fmbench"]),
        ({"watch": {"namespaces": ["a", "b"]}}, ["--namespace=a", "--namespace=b"]),
        ({"watch": {"mode": "cluster"}}, ["--all-namespaces"]),
    ],
)
def test_watch_mode_becomes_operator_args(values: dict[str, Any], args: list[str]) -> None:
    c = _operator_container(render_objects(values))
    assert c["args"][0] == "operator" and "--standalone" in c["args"]
    assert [a for a in c["args"] if a.startswith(("--namespace", "--all-namespaces"))] == args
    from fmbench_k8s.operator.run import main  # the operator's own parser accepts them

    assert callable(main)


def test_operator_environment_round_trips_through_the_operator_config() -> None:
    from fmbench_k8s.operator.handlers import config_from_env

    values = copy.deepcopy(FULL)
    values["runner"]["serviceAccount"]["annotations"]["eks.amazonaws.com/sts-regional-endpoints"] = "true"
    values["operator"].update({"intervalSeconds": 5, "unschedulableGraceSeconds": 600})
    c = _operator_container(render_objects(values))
    env = _env(c)
    cfg, grace, interval = config_from_env(env)
    image = "ghcr.io/fmbench-k8s/fmbench-k8s@sha256:" + "a" * 64
    assert c["image"] == image and cfg.image == image
    assert cfg.image_pull_policy == "IfNotPresent"
    assert dict(cfg.service_account_annotations) == values["runner"]["serviceAccount"]["annotations"]
    assert (grace, interval) == (600.0, 5.0)
    assert env["MPLCONFIGDIR"] == "/tmp/matplotlib" and env["X"] == "1"


def test_service_account_annotations_for_irsa() -> None:
    sa = one(render_objects(FULL), "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/op"}


def test_notes_tell_the_next_commands() -> None:
    text = notes()
    assert "kubectl -n fmbench apply -f" in text
    assert "get fmb" in text
    assert "kubectl -n fmbench wait --for=condition=Ready benchmark/" in text
    assert "does not serve monitoring.coreos.com/v1" in notes(api_versions=())


# --------------------------------------------------------------------------- RBAC


def _rules_of(objects: list[JSON]) -> list[JSON]:
    return [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]


@pytest.mark.parametrize("values", COMBINATIONS, ids=lambda v: ",".join(sorted(v)) or "defaults")
def test_rbac_has_no_wildcards_and_no_secrets(values: dict[str, Any]) -> None:
    for rule in _rules_of(render_objects(values)):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), rule
        assert "secrets" not in rule["resources"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_namespaced_mode_rbac_comes_from_the_shared_rules_file() -> None:
    rules = rbac_rules()
    objects = render_objects({"watch": {"namespaces": ["team-a", "team-b"]}})
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == rules["namespaced"] for r in roles)
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "fmb-fmbench-k8s", "namespace": "fmbench"}]
        for b in bindings
    )
    assert one(objects, "ClusterRole")["rules"] == rules["cluster"]
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]


def test_cluster_mode_rbac_is_one_cluster_role_with_both_rule_sets() -> None:
    rules = rbac_rules()
    objects = render_objects({"watch": {"mode": "cluster"}})
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    assert one(objects, "ClusterRole")["rules"] == rules["namespaced"] + rules["cluster"]
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "fmb-fmbench-k8s"


def test_rbac_and_service_account_can_be_turned_off() -> None:
    objects = render_objects({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert not _rules_of(objects) and not by_kind(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
