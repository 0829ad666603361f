"""Monitoring shipped with the chart: PrometheusRule (promtool), every dashboard and alert query
parsed by a real Prometheus, dashboard structure, and the contracts behind the queries (metric
names the load workers, the simulator and kube-state-metrics export; pod labels and ports the
operator gives the pods the monitors select)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmbench_k8s.analysis.prometheus import SERVER_NAMES
from fmbench_k8s.api import parse_benchmark
from fmbench_k8s.operator import builders
from tests.chart.chartkit import (
    JSON,
    KSM_CONFIG,
    by_kind,
    dashboard_paths,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    metric_names,
    one,
    prometheus_rule_groups,
    render_objects,
    rule_expressions,
)
from tests.chart.conftest import Prometheus, require_tool
from tests.corpus import REPO

RULE_VALUES: list[dict[str, Any]] = [
    {},
    {"watch": {"mode": "cluster"}},
    {"watch": {"namespaces": ["a", "b"]}, "monitoring": {"instancePrices": {"g6e.2xlarge": 2.242}}},
    {"monitoring": {"rules": {"benchmarkPhaseFromKubeStateMetrics": False, "additionalLabels": {"team": "ml"}}}},
]
DASHBOARDS = dashboard_paths()
EXPECTED_DASHBOARDS = {"runs-overview", "live-run", "model-server", "cost-burn"}
#: Names other exporters own: DCGM (NVIDIA), neuron-monitor (AWS Neuron), kube-state-metrics' own.
EXTERNAL_METRICS = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "neuroncore_utilization_ratio",
    "kube_pod_info",
    "kube_node_labels",
    "kube_deployment_status_replicas_unavailable",
    "kube_deployment_status_replicas_available",
    # vLLM < 0.10's name of kv_cache_usage_perc; the panel reads either.
    "vllm:gpu_cache_usage_perc",
}


# --------------------------------------------------------------------------- rules


@pytest.mark.integration
@pytest.mark.parametrize("values", RULE_VALUES, ids=range(len(RULE_VALUES)))
def test_promtool_checks_the_prometheus_rule(values: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    groups = prometheus_rule_groups(render_objects(values))
    assert {g["name"] for g in groups} >= {"fmbench.alerts"}
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    expected = {
        "FmbenchRequestErrorRatioHigh",
        "FmbenchClientBound",
        "FmbenchModelServerNotReady",
        "FmbenchOperatorDown",
    }
    if values.get("monitoring", {}).get("rules", {}).get("benchmarkPhaseFromKubeStateMetrics", True):
        expected.add("FmbenchBenchmarkFailed")
    assert alerts == expected


def test_alerts_are_scoped_to_the_watched_namespaces() -> None:
    exprs = rule_expressions(prometheus_rule_groups(render_objects({"watch": {"namespaces": ["a", "b"]}})))
    for expr in exprs:
        if "fmbench_" in expr or "server" in expr:
            assert 'namespace=~"a|b"' in expr, expr
    cluster = rule_expressions(prometheus_rule_groups(render_objects({"watch": {"mode": "cluster"}})))
    assert not any('namespace=~"' in e for e in cluster)


@pytest.mark.integration
def test_rule_and_dashboard_queries_parse_in_prometheus(prometheus: Prometheus) -> None:
    queries = [q for values in RULE_VALUES for q in rule_expressions(prometheus_rule_groups(render_objects(values)))]
    for path in DASHBOARDS:
        queries += dashboard_queries(path)
        queries += dashboard_queries(path, {"namespace": "team-a", "benchmark": "(run-1|run-2)", "variant": "g6e"})
        queries += [_variable_query(v) for v in _query_variables(load_dashboard(path))]
    assert len(queries) > 60
    bad = []
    for expr in dict.fromkeys(queries):
        status, body = prometheus.query_status(expr)
        if status != 200:
            bad.append(f"{expr}\n  -> {status} {body[:300]}")
    assert not bad, "\n".join(bad)


def _query_variables(dashboard: JSON) -> list[JSON]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def _variable_query(variable: JSON) -> str:
    """label_values(selector, label) → the selector, with the dashboard's variables as '.*'."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
    assert match, variable["definition"]
    return match.group(1).replace("$namespace", ".*").replace("$benchmark", ".*")


# --------------------------------------------------------------------------- dashboards


def test_the_four_dashboards_ship() -> None:
    assert {p.stem for p in DASHBOARDS} == EXPECTED_DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_grafana_10_shaped(path: Path) -> None:
    d = load_dashboard(path)
    assert 36 <= d["schemaVersion"] <= 41 and d["uid"] == f"fmbench-{path.stem}" and d["title"].startswith("fmbench")
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "namespace", "benchmark", "variant"]
    for v in _query_variables(d):
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
    panels = list(iter_panels(d["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("description"), f"panel {p['title']!r} has no description"
        assert p["targets"] and all(t["refId"] and t["expr"] for t in p["targets"]), p["title"]
    # every selector of a benchmark's own series (load workers, engines) honours the three
    # variables; the accelerator exporters' series are the benchmark's model-server pods' (the
    # analysis's default selector, analysis/prometheus.py)
    for _, expr in ((p["title"], t["expr"]) for p in panels for t in p.get("targets", [])):
        for selector in re.findall(r"(?<![\w:])(?:fmbench_\w+|vllm:\w+|sglang:\w+|tgi_\w+)\{([^}]*)\}", expr):
            for var in ("namespace", "benchmark", "variant"):
                assert f'{var}=~"${var}"' in selector, expr
        for selector in re.findall(r"(?<![\w:])(?:DCGM_\w+|neuroncore_\w+)(\{[^}]*\})?", expr):
            assert selector == '{namespace=~"$namespace", pod=~"($benchmark)-($variant)-.+"}', expr


def test_live_run_dashboard_covers_the_load_metrics() -> None:
    queries = " ".join(dashboard_queries(next(p for p in DASHBOARDS if p.stem == "live-run")))
    for needle in (
        "histogram_quantile(0.95, sum by (variant, le) (rate(fmbench_request_ttft_seconds_bucket",
        "histogram_quantile(0.99, sum by (variant, le) (rate(fmbench_request_tpot_seconds_bucket",
        "histogram_quantile(0.5, sum by (variant, le) (rate(fmbench_request_e2e_seconds_bucket",
        "rate(fmbench_output_tokens_total",
        "fmbench_inflight_requests",
        "fmbench_target_concurrency",
        "fmbench_schedule_lag_seconds_bucket",
        "sum by (variant, outcome) (rate(fmbench_requests_total",
    ):
        assert needle in queries, needle


def test_dashboard_configmaps_carry_the_dashboard_files() -> None:
    objects = render_objects({"monitoring": {"dashboards": {"namespace": "monitoring", "folder": "LLM"}}})
    maps = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(maps) == len(DASHBOARDS)
    shipped = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "LLM"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == shipped[name]
    assert not by_kind(render_objects({"monitoring": {"dashboards": {"enabled": False}}}), "ConfigMap")


# --------------------------------------------------------------------------- gating


def test_monitors_render_only_where_the_prometheus_operator_api_is_served() -> None:
    kinds = {o["kind"] for o in render_objects(api_versions=())}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert "ConfigMap" in kinds  # dashboards need only Grafana's sidecar
    kinds = {o["kind"] for o in render_objects({"monitoring": {"enabled": False}})}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_monitor_namespace_selector_follows_the_watch_mode() -> None:
    objects = render_objects({"watch": {"namespaces": ["a", "b"]}, "monitoring": {"labels": {"release": "kps"}}})
    for pm in by_kind(objects, "PodMonitor"):
        assert pm["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}
        assert pm["metadata"]["labels"]["release"] == "kps"
    for pm in by_kind(render_objects({"watch": {"mode": "cluster"}}), "PodMonitor"):
        assert pm["spec"]["namespaceSelector"] == {"any": True}


# --------------------------------------------------------------------------- contracts


def _benchmark() -> Any:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["metadata"]["namespace"] = "fmbench"
    return parse_benchmark(doc)


def _pod_meta_label(key: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _check_selects(monitor_spec: JSON, endpoints_key: str, template: JSON) -> None:
    labels = template["metadata"]["labels"]
    selector = monitor_spec["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), (selector, labels)
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    for endpoint in monitor_spec[endpoints_key]:
        assert endpoint["port"] in ports, (endpoint["port"], ports)
        for relabel in endpoint.get("relabelings", []):
            for source in relabel["sourceLabels"]:
                if source.startswith("__meta_kubernetes_pod_label_"):
                    assert source in {_pod_meta_label(k) for k in labels}, source


def test_pod_monitors_select_the_pods_the_operator_creates() -> None:
    bench = _benchmark()
    cfg = builders.OperatorConfig()
    variant = bench.spec.variants[0]
    objects = render_objects()
    workers = builders.loadgen_workers_job(bench, variant, "uid", "run-1", cfg)["spec"]["template"]
    server = builders.server_deployment(bench, variant, "uid", cfg)["spec"]["template"]
    _check_selects(one(objects, "PodMonitor", "fmb-fmbench-k8s-load-workers")["spec"], "podMetricsEndpoints", workers)
    _check_selects(one(objects, "PodMonitor", "fmb-fmbench-k8s-model-servers")["spec"], "podMetricsEndpoints", server)
    worker_port = next(p for p in workers["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
    assert worker_port["containerPort"] == 9646


def test_service_monitor_selects_the_model_server_services() -> None:
    bench = _benchmark()
    service = builders.server_service(bench, bench.spec.variants[0], "uid")
    sm = one(render_objects({"monitoring": {"modelServers": {"kind": "ServiceMonitor"}}}), "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def _exported_names(registry: Any) -> set[str]:
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
    return names


def _ksm_names() -> set[str]:
    config = yaml.safe_load(KSM_CONFIG.read_text())
    out = set()
    for resource in config["spec"]["resources"]:
        for metric in resource["metrics"]:
            out.add(f"{resource['metricNamePrefix']}_{metric['name']}")
    return out


def test_every_metric_the_dashboards_and_alerts_read_has_an_exporter() -> None:
    """fmbench_* from the load worker's exporter, vllm:* from the simulator, sglang:* from SGLang's
    own source (the engine tier), kube_fmbench_* from the kube-state-metrics config, fmbench:* from
    the chart's recording rules."""
    from fmbench_k8s.loadgen.exporter import Exporter  # prometheus_client only: no Locust, no gevent
    from fmbench_k8s.loadgen.request import RequestState
    from fmbench_k8s.simulator.metrics import SimMetrics

    exporter = Exporter("b", "v")
    st = RequestState("r1", 1.0, prompt_tokens=8, t_sent=1.0)  # one ok request: every series exists
    st.answer_tokens([1.1, 1.2])
    st.succeed(1.2)
    exporter.observe(0, st, open_loop=True)
    exporter.target_concurrency.labels(**exporter.labels).set(0)
    exporter.target_rate.labels(**exporter.labels).set(0)
    sim = SimMetrics("m", 8, lambda: 0, lambda: 0)
    known = _exported_names(exporter.registry) | _exported_names(sim.registry) | _ksm_names()
    known.add("fmbench:instance_price_usd_per_hour")
    # SGLang's names, as the report reads them (checked against SGLang's own source in
    # tests/engines/test_sglang_args.py); its histograms are queried by their buckets
    # and TGI's (from its metrics reference, docs/metrics.md)
    engines = {n for n in SERVER_NAMES if n.startswith(("sglang:", "tgi_"))}
    known |= engines | {f"{n}_bucket" for n in engines}
    objects = render_objects({"monitoring": {"instancePrices": {"g6e.2xlarge": 1.0}}})
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for q in dashboard_queries(path):
            for name in metric_names(q):
                used.setdefault(name, set()).add(path.stem)
    for q in rule_expressions(prometheus_rule_groups(objects)):
        for name in metric_names(q):
            used.setdefault(name, set()).add("PrometheusRule")
    unknown = {n: sorted(where) for n, where in used.items() if n not in known | EXTERNAL_METRICS}
    assert not unknown, f"queried but exported by nothing we know: {unknown}"
    for contract in (
        "fmbench_requests_total",
        "fmbench_request_ttft_seconds_bucket",
        "fmbench_request_e2e_seconds_bucket",
        "fmbench_request_tpot_seconds_bucket",
        "fmbench_output_tokens_total",
        "fmbench_prompt_tokens_total",
        "fmbench_inflight_requests",
        "fmbench_target_concurrency",
        "fmbench_schedule_lag_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total",
        "sglang:num_running_reqs",
        "sglang:token_usage",
        "sglang:time_to_first_token_seconds_bucket",
        "tgi_queue_size",
        "tgi_request_duration_bucket",
        "fmbench_target_rate",
    ):
        assert contract in used, f"DESIGN §4 metric {contract} is on no dashboard"


def test_kube_state_metrics_config_reads_fields_the_crd_has() -> None:
    crd = yaml.safe_load((REPO / "crds/fmbench.io_benchmarks.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    config = yaml.safe_load(KSM_CONFIG.read_text())
    assert config["kind"] == "CustomResourceStateMetrics"
    (resource,) = config["spec"]["resources"]
    assert resource["groupVersionKind"] == {
        "group": "fmbench.io",
        "version": crd["spec"]["versions"][0]["name"],
        "kind": "Benchmark",
    }

    def field(path: list[str]) -> JSON:
        node: JSON = schema
        for part in path:
            node = node["properties"][part]
        return node

    for metric in resource["metrics"]:
        each = metric["each"]
        if each["type"] == "StateSet":
            assert set(each["stateSet"]["list"]) == set(field(each["stateSet"]["path"])["enum"])
        else:
            base = each["gauge"]["path"]
            field([*base, *each["gauge"]["valueFrom"]])
            for path in each["gauge"]["labelsFromPath"].values():
                field([*base, *path])
