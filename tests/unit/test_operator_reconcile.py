"""The state machine: every phase, every failure path, idempotence, restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from fmbench_k8s.api import Benchmark, BenchmarkStatus, parse_benchmark
from fmbench_k8s.operator.builders import OperatorConfig
from fmbench_k8s.operator.reconcile import (
    Decision,
    JobState,
    Observation,
    VariantObservation,
    placement_problems,
    reconcile,
    rejected,
)
from tests.corpus import REPO

CFG = OperatorConfig(image="example.com/fmbench-k8s:test")
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
UID = "abcdef12-0000-0000-0000-000000000000"


def _bench(cleanup: str = "Always") -> Benchmark:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["metadata"]["namespace"] = "ns"
    doc["spec"]["cleanup"] = cleanup
    doc["spec"]["variants"] = [
        doc["spec"]["variants"][0],
        {"name": "ext", "endpoint": {"api": "openai-chat", "url": "http://x:8000/v1"}, "pricePerHour": 1.0},
    ]
    return parse_benchmark(doc)


def _step(bench: Benchmark, status: dict[str, Any], at: float = 0, **kw: Any) -> Decision:
    obs = Observation(now=T0 + timedelta(seconds=at), created=T0, uid=UID, generation=1, status=status, **kw)
    decision = reconcile(bench, obs, CFG)
    BenchmarkStatus.model_validate(decision.status)  # whatever we write is a valid status
    return decision


def _kinds(d: Decision) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in d.create]


def _cond(d: Decision, ctype: str) -> dict[str, Any]:
    return next(c for c in d.status["conditions"] if c["type"] == ctype)


SUMMARY: dict[str, Any] = {
    "benchmark": "llama31-8b-vllm-gpu",
    "runId": "r",
    "partial": False,
    "recommendation": {
        "variant": "g5-vllm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "instanceType": "g5.2xlarge",
        "instances": 3,
        "costPerHour": 3.63,
        "costPer1kRequests": 0.1,
        "costPer1mOutputTokens": 2.5,
        "latencySeconds": 1.8,
        "maxConcurrencyMeetingSlo": 16,
        "lowerBound": False,
        "instancesInterval": {"low": 3, "high": 4, "confidence": 0.95},
        "pricing": "instance",
    },
    "variants": [
        {"name": "g5-vllm", "maxConcurrencyMeetingSlo": 16, "capacityLowerBound": False, "stages": 5, "reason": None}
    ],
    "reportUri": "s3://my-results/fmbench/ns/llama31-8b-vllm-gpu/r/report.html",
}


def _through_to(bench: Benchmark, phase: str) -> Decision:
    d = _step(bench, {})
    if phase == "Deploying":
        return d
    d = _step(
        bench,
        d.status,
        5,
        variants={"g5-vllm": VariantObservation(ready_replicas=1, node_instance_types=("g5.2xlarge",))},
    )
    if phase == "Running":
        return d
    done = JobState(succeeded=True)
    d = _step(
        bench,
        d.status,
        10,
        variants={"g5-vllm": VariantObservation(1, master=done), "ext": VariantObservation(master=done)},
    )
    assert phase == "Analyzing"
    return d


def test_happy_path_reaches_succeeded_with_the_recommendation() -> None:
    bench = _bench()
    d = _step(bench, {})
    assert d.status["phase"] == "Deploying"
    assert d.status["runId"] == "20261128-120000-abcdef"
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-server") in _kinds(d)
    assert ("ConfigMap", "llama31-8b-vllm-gpu-spec") in _kinds(d)
    assert ("Normal", "Deploying", "deploying model servers") in d.events

    d = _step(bench, d.status, 5, variants={"g5-vllm": VariantObservation(1, ("g5.2xlarge",))})
    assert d.status["phase"] == "Running"
    assert _cond(d, "ModelServersReady")["status"] == "True"
    assert {k for k, _ in _kinds(d)} >= {"Job", "Service"}
    variants = {v["name"]: v for v in d.status["variants"]}
    assert variants["g5-vllm"]["nodeInstanceTypes"] == ["g5.2xlarge"]

    d = _through_to(bench, "Analyzing")
    assert d.status["phase"] == "Analyzing"
    assert ("Job", "llama31-8b-vllm-gpu-analysis") in _kinds(d)
    [analysis] = [c for c in d.create if c["metadata"]["name"] == "llama31-8b-vllm-gpu-analysis"]
    args = analysis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--ran-on") + 1] == "g5-vllm=g5.2xlarge"  # what ran is what is priced

    d = _step(bench, d.status, 20, analysis=JobState(succeeded=True, message=json.dumps(SUMMARY)))
    assert d.status["phase"] == "Succeeded"
    assert d.status["recommendation"]["instances"] == 3
    assert (d.status["recommendation"]["instancesLow"], d.status["recommendation"]["instancesHigh"]) == (3, 4)
    assert d.status["recommendation"]["lowerBound"] is False
    assert _cond(d, "Recommended")["reason"] == "CapacityMeasured"
    assert "g5-vllm on g5.2xlarge × 3" in d.status["message"]

    bounded = {
        **SUMMARY,
        "recommendation": {
            **SUMMARY["recommendation"],
            "lowerBound": True,
            "instancesInterval": {"low": None, "high": 3, "confidence": 0.95},
        },
    }
    lb = _step(bench, _through_to(bench, "Analyzing").status, 20,
               analysis=JobState(succeeded=True, message=json.dumps(bounded)))  # fmt: skip
    assert lb.status["recommendation"]["lowerBound"] is True and "instancesLow" not in lb.status["recommendation"]
    assert _cond(lb, "Recommended")["reason"] == "LowerBound" and "× at most 3" in lb.status["message"]
    nothing = json.dumps({**SUMMARY, "recommendation": None})
    none = _step(bench, _through_to(bench, "Analyzing").status, 20, analysis=JobState(succeeded=True, message=nothing))
    assert none.status["phase"] == "Succeeded" and _cond(none, "Recommended")["status"] == "False"
    assert _cond(none, "Recommended")["reason"] == "NoVariantMeetsSlo"
    assert d.status["report"]["uri"].endswith("report.html")
    assert _cond(d, "Ready")["status"] == "True" and _cond(d, "ReportPublished")["status"] == "True"
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-server") in d.delete  # cleanup: Always
    assert d.requeue_after is None
    variants = {v["name"]: v for v in d.status["variants"]}
    assert variants["g5-vllm"]["maxConcurrencyMeetingSlo"] == 16


def test_reconcile_is_idempotent() -> None:
    bench = _bench()
    first = _step(bench, {})
    again = _step(bench, first.status, 1)
    assert _kinds(again) == _kinds(first)
    assert again.status["phase"] == "Deploying" and again.events == []


def test_unschedulable_model_server_fails_with_the_scheduler_reason() -> None:
    bench = _bench()
    d = _step(bench, {})
    problem = ("InsufficientAccelerators", "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    d = _step(bench, d.status, 3, variants={"g5-vllm": VariantObservation(problem=problem)})
    assert d.status["phase"] == "Failed"
    assert "variant g5-vllm" in d.status["message"] and "Insufficient nvidia.com/gpu" in d.status["message"]
    assert d.events[-1][:2] == ("Warning", "InsufficientAccelerators")
    assert _cond(d, "Ready")["status"] == "False"


def test_readiness_timeout() -> None:
    bench = _bench()
    d = _step(bench, {})
    d = _step(bench, d.status, 45 * 60 + 1, variants={"g5-vllm": VariantObservation(0)})
    assert d.status["phase"] == "Failed" and _cond(d, "Ready")["reason"] == "ReadinessTimeout"
    assert "g5-vllm 0/1" in d.status["message"]


def test_load_failure_and_analysis_failure() -> None:
    bench = _bench()
    d = _through_to(bench, "Running")
    failed = _step(
        bench,
        d.status,
        9,
        variants={"g5-vllm": VariantObservation(1, master=JobState(failed=True, message="BackoffLimitExceeded"))},
    )
    assert failed.status["phase"] == "Failed" and "load generator failed" in failed.status["message"]

    d = _through_to(bench, "Analyzing")
    bad = _step(bench, d.status, 20, analysis=JobState(succeeded=True, message="Traceback ..."))
    assert bad.status["phase"] == "Failed" and "not JSON" in bad.status["message"]
    crashed = _step(bench, d.status, 20, analysis=JobState(failed=True, message="OOMKilled"))
    assert crashed.status["phase"] == "Failed" and "OOMKilled" in crashed.status["message"]


def test_crash_of_the_model_server_during_load_fails_the_variant() -> None:
    bench = _bench()
    d = _through_to(bench, "Running")
    d = _step(
        bench, d.status, 9, variants={"g5-vllm": VariantObservation(0, problem=("CrashLoopBackOff", "back-off 40s"))}
    )
    assert d.status["phase"] == "Failed" and "CrashLoopBackOff" in d.status["message"]


def test_cleanup_policies() -> None:
    for policy, on_success, on_failure in (("Never", False, False), ("OnSuccess", True, False), ("Always", True, True)):
        bench = _bench(policy)
        d = _through_to(bench, "Analyzing")
        ok = _step(bench, d.status, 20, analysis=JobState(succeeded=True, message=json.dumps(SUMMARY)))
        assert bool(ok.delete) is on_success, policy
        bad = _step(bench, d.status, 20, analysis=JobState(failed=True))
        assert bool(bad.delete) is on_failure, policy


def test_run_deadline_and_missing_s3() -> None:
    bench = _bench()
    d = _through_to(bench, "Running")
    d = _step(bench, d.status, 6 * 3600 + 1)
    assert d.status["phase"] == "Failed" and "spec.timeouts.run" in d.status["message"]

    doc = yaml.safe_load((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    del doc["spec"]["report"]
    d = _step(parse_benchmark(doc), {})
    assert d.status["phase"] == "Failed" and "spec.report.s3" in d.status["message"]


def test_terminal_phases_do_nothing_more() -> None:
    bench = _bench()
    d = _through_to(bench, "Analyzing")
    d = _step(bench, d.status, 20, analysis=JobState(succeeded=True, message=json.dumps(SUMMARY)))
    again = _step(bench, d.status, 100)
    assert again.create == [] and again.delete == [] and again.events == []
    assert again.status["phase"] == "Succeeded"


def test_a_child_the_api_server_refuses_fails_the_run_at_once_and_frees_what_was_made() -> None:
    bench = _bench()
    deploying = _through_to(bench, "Deploying")
    obs = Observation(now=T0 + timedelta(seconds=3), created=T0, uid=UID, generation=1, status=deploying.status)
    message = 'the API server refused Deployment x: deployments.apps "x" is forbidden: exceeded quota: none'
    d = rejected(bench, obs, CFG, message)
    BenchmarkStatus.model_validate(d.status)
    assert (d.status["phase"], d.status["message"]) == ("Failed", message)
    assert _cond(d, "Ready")["reason"] == "Rejected" and d.create == []
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-server") in d.delete  # nothing held for hours
    assert d.events == [("Warning", "Rejected", message)]


def test_an_instance_type_the_operator_cannot_size_fails_before_anything_is_created() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["variants"][0]["instanceType"] = "g7.2xlarge"  # priced by the spec, unknown to the catalog
    doc["spec"]["variants"][0]["pricePerHour"] = 2.0
    d = _step(parse_benchmark(doc), {})
    assert d.status["phase"] == "Failed" and d.create == []
    assert "spec.variants[0].instanceType: unknown instance type 'g7.2xlarge'" in d.status["message"]


def test_tolerations_and_node_selectors_beyond_what_the_cluster_allows_fail_before_anything_runs() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["variants"][0]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}, {"key": "gpu-team-b"}]
    doc["spec"]["variants"][0]["nodeSelector"] = {"kubernetes.io/hostname": "ip-10-0-0-1"}
    bench = parse_benchmark(doc)
    assert placement_problems(bench, CFG) == []  # the chart's default: any key the CRD accepts
    cfg = OperatorConfig(
        image=CFG.image,
        allowed_toleration_keys=("dedicated",),
        allowed_node_selector_keys=("eks.amazonaws.com/nodegroup",),
    )
    problems = placement_problems(bench, cfg)
    assert problems == [
        "spec.variants[0].tolerations[1].key: gpu-team-b is not among the taints this cluster lets benchmarks "
        "tolerate (dedicated; modelServers.allowedTolerationKeys)",
        "spec.variants[0].nodeSelector: kubernetes.io/hostname is not among the labels this cluster lets benchmarks "
        "select (eks.amazonaws.com/nodegroup; modelServers.allowedNodeSelectorKeys)",
    ]
    obs = Observation(now=T0, created=T0, uid=UID, generation=1, status={})
    d = reconcile(bench, obs, cfg)
    assert d.status["phase"] == "Failed" and d.create == [] and problems[0] in d.status["message"]


def test_load_generator_pods_refused_by_a_quota_fail_the_run_with_the_refusal() -> None:
    bench = _bench()
    d = _through_to(bench, "Running")
    refused = JobState(failed=True, refused=True, message="FailedCreate: exceeded quota: small")
    d = _step(bench, d.status, 12, variants={"g5-vllm": VariantObservation(1, workers=refused)})
    assert d.status["phase"] == "Failed"
    assert d.status["message"] == "variant g5-vllm: load generator workers: FailedCreate: exceeded quota: small"
    assert _cond(d, "LoadComplete")["reason"] == "LoadFailed"
