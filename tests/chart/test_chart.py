"""The Helm chart rendered and linted by Helm's own Go SDK, its values schema, its RBAC and the
contracts it shares with the operator (CRD, rules file, env, pod labels and ports)."""

from __future__ import annotations

import copy
import subprocess
import tarfile
from pathlib import Path
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
from tests.cluster.controlplane import build_binaries

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
    "networkPolicy": {"enabled": True},
    "modelServers": {
        "allowedTolerationKeys": ["dedicated"],
        "allowedNodeSelectorKeys": ["eks.amazonaws.com/nodegroup"],
    },
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
    cluster_scoped = (
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    for kind in ("ServiceAccount", "Deployment", *cluster_scoped):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("Role") == kinds.count("RoleBinding") == 2  # the watched namespace's, leader election's
    assert kinds.count("PodMonitor") == 2 and kinds.count("PrometheusRule") == 1
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
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
def test_watch_mode_becomes_operator_args(
    values: dict[str, Any], args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = _operator_container(render_objects(values))
    assert c["args"][0] == "operator"
    assert [a for a in c["args"] if a.startswith(("--namespace", "--all-namespaces"))] == args
    from fmbench_k8s.operator.run import parse_args

    # the operator's own parser accepts them, with the Lease in the namespace the pod is given
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    monkeypatch.setenv("POD_NAMESPACE", "fmbench")
    parsed, election = parse_args(c["args"][1:])
    assert parsed.standalone and election is not None
    assert (election.namespace, election.name) == ("fmbench", "fmbench-operator")


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
    assert (cfg.allowed_toleration_keys, cfg.allowed_node_selector_keys) == (
        ("dedicated",),
        ("eks.amazonaws.com/nodegroup",),
    )
    assert env["MPLCONFIGDIR"] == "/tmp/matplotlib" and env["X"] == "1"
    monitoring = values["monitoring"]
    assert cfg.scrape_endpoints is True and cfg.scrape_interval == "15s"  # the chart's monitoring.interval
    assert dict(cfg.monitor_labels) == monitoring["labels"]
    values["monitoring"]["endpoints"] = {"enabled": False}
    assert config_from_env(_env(_operator_container(render_objects(values))))[0].scrape_endpoints is False


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


def _watch_roles(objects: list[JSON], kind: str) -> list[JSON]:
    return [o for o in by_kind(objects, kind) if not o["metadata"]["name"].endswith("-leader-election")]


def test_namespaced_mode_rbac_comes_from_the_shared_rules_file() -> None:
    rules = rbac_rules()
    objects = render_objects({"watch": {"namespaces": ["team-a", "team-b"]}})
    roles = _watch_roles(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == rules["namespaced"] for r in roles)
    bindings = _watch_roles(objects, "RoleBinding")
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
    assert not _watch_roles(objects, "Role") and not _watch_roles(objects, "RoleBinding")
    assert one(objects, "ClusterRole")["rules"] == rules["namespaced"] + rules["cluster"]
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "fmb-fmbench-k8s"


@pytest.mark.parametrize("watch", [{"namespaces": ["team-a"]}, {"mode": "cluster"}])
def test_leader_election_may_touch_only_its_lease_in_the_release_namespace(watch: dict[str, Any]) -> None:
    objects = render_objects({"watch": watch})
    role = one(objects, "Role", "fmb-fmbench-k8s-leader-election")
    assert role["metadata"]["namespace"] == "fmbench"
    assert role["rules"] == rbac_rules()["leaderElection"]
    named = [r for r in role["rules"] if r["verbs"] != ["create"]]
    assert named and all(r["resourceNames"] == ["fmbench-operator"] for r in named)
    binding = one(objects, "RoleBinding", "fmb-fmbench-k8s-leader-election")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "fmb-fmbench-k8s", "namespace": "fmbench"}


def test_rbac_and_service_account_can_be_turned_off() -> None:
    objects = render_objects({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert not _rules_of(objects) and not by_kind(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --------------------------------------------------------------------------- network policies


def _selects(selector: JSON, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector matched against pod labels (In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def _run_pods() -> dict[str, dict[str, str]]:
    """The labels of the pods the operator creates for a run, from its own builders."""
    from fmbench_k8s.api import parse_benchmark
    from fmbench_k8s.operator import builders
    from tests.corpus import REPO

    bench = parse_benchmark(yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text()), "sample")
    variant, cfg = bench.spec.variants[0], builders.OperatorConfig()
    objects = {
        "server": builders.server_deployment(bench, variant, "uid", cfg),
        "master": builders.loadgen_master_job(bench, variant, "uid", "run", cfg),
        "worker": builders.loadgen_workers_job(bench, variant, "uid", "run", cfg),
        "analysis": builders.analysis_job(bench, "uid", "run", cfg),
    }
    return {k: o["spec"]["template"]["metadata"]["labels"] for k, o in objects.items()}


def test_network_policies_isolate_each_component_of_a_run() -> None:
    pods = _run_pods()
    objects = render_objects({"networkPolicy": {"enabled": True}, "watch": {"namespaces": ["team-a", "team-b"]}})
    policies = by_kind(objects, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a"] * 3 + ["team-b"] * 3
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies if p["metadata"]["namespace"] == "team-a"}
    loadgen, server, analysis = (by_name[f"fmb-fmbench-k8s-{n}"] for n in ("loadgen", "model-server", "analysis"))

    def selected(spec: JSON) -> set[str]:
        return {name for name, labels in pods.items() if _selects(spec["podSelector"], labels)}

    assert selected(loadgen) == {"master", "worker"}
    assert selected(server) == {"server"}
    assert selected(analysis) == {"analysis"}

    def peers(rules: list[JSON], key: str) -> set[str]:
        return {n for r in rules for p in r.get(key, []) if "namespaceSelector" not in p
                for n, labels in pods.items() if _selects(p["podSelector"], labels)}  # fmt: skip

    # load generators: to each other and their model servers in-namespace, DNS, and HTTPS (loadEgress)
    assert peers(loadgen["egress"], "to") == {"master", "worker", "server"}
    assert {"port": 53, "protocol": "UDP"} in loadgen["egress"][2]["ports"]
    assert loadgen["egress"][3] == {"ports": [{"port": 443, "protocol": "TCP"}]}
    # in: each other, and Prometheus on the metrics port only
    assert peers(loadgen["ingress"], "from") == {"master", "worker"}
    prometheus = loadgen["ingress"][1]
    assert prometheus["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert prometheus["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    # model servers: reached by the load generators and Prometheus only; analysis: by nothing
    assert server["policyTypes"] == ["Ingress"] and peers(server["ingress"], "from") == {"master", "worker"}
    assert analysis["policyTypes"] == ["Ingress"] and "ingress" not in analysis


def test_network_policies_are_opt_in_and_need_a_namespace_list() -> None:
    assert not by_kind(render_objects(), "NetworkPolicy")
    assert not by_kind(
        render_objects({"networkPolicy": {"enabled": True}, "watch": {"mode": "cluster"}}), "NetworkPolicy"
    )
    narrowed = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]
    objects = render_objects({"networkPolicy": {"enabled": True, "loadEgress": narrowed}})
    assert one(objects, "NetworkPolicy", "fmb-fmbench-k8s-loadgen")["spec"]["egress"][3:] == narrowed


def test_make_chart_packages_what_helm_install_needs(tmp_path: Path) -> None:
    """`make chart`: the package holds the CRD, the schema, the templates and the files they read."""
    helm_bin = build_binaries(quiet=True) / "helm"
    done = subprocess.run(
        [str(helm_bin), "package", str(CHART), "-d", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    (package,) = tmp_path.glob("fmbench-k8s-*.tgz")
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
    for needed in ("crds/fmbench.io_benchmarks.yaml", "values.schema.json", "templates/admissionpolicy.yaml",
                   "dashboards/live-run.json", "files/operator-rbac-rules.yaml"):  # fmt: skip
        assert f"fmbench-k8s/{needed}" in names, needed
