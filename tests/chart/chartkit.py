"""Helpers for the chart tests: render/lint the chart with Helm's Go SDK (helm-python-sdk,
in-process), read the shipped dashboards and rules, and validate manifests.

``dashboard_queries(path)`` returns every PromQL expression of a dashboard with its template
variables substituted, for tests that run the queries against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

from tests.corpus import REPO

CHART = REPO / "charts" / "fmbench-k8s"
DASHBOARDS = CHART / "dashboards"
RBAC_RULES = CHART / "files" / "operator-rbac-rules.yaml"
KSM_CONFIG = CHART / "files" / "kube-state-metrics-benchmarks.yaml"
GENERATED_CRD = REPO / "crds" / "fmbench.io_benchmarks.yaml"
CHART_CRD = CHART / "crds" / "fmbench.io_benchmarks.yaml"
#: The Kubernetes version of the test control plane (tests/cluster/go/kube/go.mod).
KUBE_VERSION = "v1.36.3"
MONITORING_API = ("monitoring.coreos.com/v1",)

JSON = dict[str, Any]


def kube_version() -> str:
    """The k8s.io/kubernetes version the test control plane is built from."""
    gomod = (REPO / "tests" / "cluster" / "go" / "kube" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+)", gomod, re.MULTILINE)
    return match.group(1) if match else KUBE_VERSION


def render(
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = "fmbench",
    release: str = "fmb",
    api_versions: Iterable[str] = MONITORING_API,
    kube: str | None = None,
) -> dict[str, str]:
    """``helm template``: template path → rendered text (NOTES.txt included).

    ``api_versions`` are the extra APIs ``.Capabilities.APIVersions`` reports (the Python
    wrapper does not expose them; the library's render options do).
    """
    opts = {
        "name": release,
        "namespace": namespace,
        "is_install": True,
        "api_versions": list(api_versions),
        "kube_version": kube or kube_version(),
    }
    with helm.Chart.load(CHART) as chart:
        raw = _native.call_string(
            "helm_render", chart._raw(), None if values is None else json.dumps(dict(values)), json.dumps(opts)
        )
    rendered: dict[str, str] = json.loads(raw)
    return rendered


def manifests(rendered: Mapping[str, str]) -> list[JSON]:
    """The Kubernetes objects of a render (NOTES.txt and empty documents dropped)."""
    out: list[JSON] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(doc)
    return out


def render_objects(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[JSON]:
    return manifests(render(values, **kwargs))


def notes(values: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    return next(t for p, t in render(values, **kwargs).items() if p.endswith("NOTES.txt"))


def by_kind(objects: Iterable[JSON], kind: str) -> list[JSON]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[JSON], kind: str, name: str | None = None) -> JSON:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def lint(values: Mapping[str, Any] | None = None, *, strict: bool = True) -> JSON:
    """``helm lint --strict``; returns the report (messages with severity 1 info .. 3 error)."""
    return helm.lint(CHART, dict(values) if values is not None else None, strict=strict, kube_version=kube_version())


def validate_values(values: Mapping[str, Any]) -> None:
    """Validate ``values`` (merged over the defaults) against values.schema.json, as install does.

    Raises :class:`helm_python.HelmValuesError` naming the key.
    """
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(dict(values)))


def rbac_rules() -> JSON:
    rules: JSON = yaml.safe_load(RBAC_RULES.read_text())
    return rules


# --------------------------------------------------------------------------- rules


def prometheus_rule_groups(objects: Iterable[JSON]) -> list[JSON]:
    """The rule groups of the rendered PrometheusRule(s), as a Prometheus rule file has them."""
    groups: list[JSON] = []
    for rule in by_kind(objects, "PrometheusRule"):
        groups.extend(rule["spec"]["groups"])
    return groups


def rule_expressions(groups: Iterable[JSON]) -> list[str]:
    return [str(r["expr"]) for g in groups for r in g["rules"]]


# --------------------------------------------------------------------------- dashboards

#: What Grafana puts in for its built-in variables when a test runs a panel's query itself.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "15000",
}


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path | str) -> JSON:
    dashboard: JSON = json.loads(Path(path).read_text())
    return dashboard


def iter_panels(panels: Iterable[JSON]) -> Iterator[JSON]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def raw_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus target, unsubstituted."""
    return [
        (str(panel.get("title", "")), str(target["expr"]))
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``[[name]]`` like Grafana (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        expr = expr.replace("${" + name + "}", value).replace("[[" + name + "]]", value).replace("$" + name, value)
    return expr


def dashboard_queries(path: Path | str, variables: Mapping[str, str] | None = None) -> list[str]:
    """Every panel query of the dashboard at ``path``, ready to send to Prometheus.

    Dashboard variables (namespace, benchmark, variant, ...) become ``.*`` (Grafana's "All" for
    these regex matchers) unless ``variables`` gives a value; Grafana's built-ins get fixed
    values (``$__rate_interval`` = 1m, ``$__range`` = 1h). A ``$`` left over is an error.
    """
    dashboard = load_dashboard(path)
    names = [v["name"] for v in dashboard.get("templating", {}).get("list", []) if v.get("type") != "datasource"]
    values = {**BUILTIN_VARIABLES, **{n: ".*" for n in names}, **(variables or {})}
    out = []
    for title, expr in raw_queries(dashboard):
        done = substitute(expr, values)
        if re.search(r"\$[A-Za-z_{]|\[\[", done):
            raise ValueError(f"{path}: panel {title!r}: unknown variable left in {done!r}")
        out.append(done)
    return out


_KEYWORDS = {"by", "on", "without", "ignoring", "group_left", "group_right", "or", "and", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (lexical: identifiers that are not functions,
    keywords, label names or label values)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        after = text[match.end() :].lstrip()
        if name in _KEYWORDS or after.startswith("("):
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number
        names.add(name)
    return names
