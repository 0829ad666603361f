"""The verify phase (docs/verify.md): the derived spec, the master's outcome line, the verdict on
a fleet, and every path of the Verifying state."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from fmbench_k8s.api import Benchmark, parse_benchmark
from fmbench_k8s.api.benchmark import to_manifest
from fmbench_k8s.contract.summary import TERMINATION_MESSAGE_BYTES
from fmbench_k8s.contract.verification import (
    LevelResult,
    MasterOutcome,
    attempt_verdict,
    describe,
    verification_spec,
)
from fmbench_k8s.loadgen.plan import planner_for
from fmbench_k8s.operator import builders
from fmbench_k8s.operator.reconcile import Decision, JobState, VariantObservation
from tests.unit.test_operator_reconcile import CFG, SUMMARY, UID, _bench, _cond, _kinds, _step, _through_to

R = 600.0  # the vllm-gpu sample's requests/minute


def _verifying_bench(**verify: Any) -> Benchmark:
    doc = to_manifest(_bench())
    doc["spec"]["verify"] = {"window": "90s", **verify}
    return parse_benchmark(doc)


def _level(rate: float, outcome: str, value: float = 1.5, low: float = 1.4, high: float = 1.6) -> LevelResult:
    return LevelResult.of(
        rate=rate, outcome=outcome, kind={"meets": "meets", "fails": "latency"}.get(outcome, "uncertain"),
        value=value, ci_low=low, ci_high=high, requests=900, error_rate=0.0, reason=None,
    )  # fmt: skip


def _master_done(*levels: LevelResult) -> JobState:
    return JobState(succeeded=True, message=MasterOutcome(levels=list(levels)).line())


# -- the derived spec and the outcome line -----------------------------------------------------------


def test_the_verification_runs_the_fleet_open_loop_at_r_and_the_step_above() -> None:
    bench = _verifying_bench(stepAbove=1.5)
    spec = verification_spec(bench.spec, "g5-vllm", 3)
    assert [v.name for v in spec.variants] == ["g5-vllm-x3"] and spec.variants[0].replicas == 3
    assert spec.load.arrival == "poisson" and spec.load.mode == "sweep"
    assert spec.load.rate is not None and spec.load.rate.levels == [R / 60, R / 60 * 1.5]
    assert spec.load.stage_duration_s == 90 and spec.load.warmup == bench.spec.load.warmup
    assert planner_for(spec.load).next_level() == R / 60  # the stage at R comes first
    assert spec.slo == bench.spec.slo and spec.workload == bench.spec.workload


def test_a_trace_is_verified_at_its_mean_rate_with_poisson_arrivals() -> None:
    doc = to_manifest(_verifying_bench())
    doc["spec"]["load"] |= {"arrival": "trace", "rate": {"min": 1, "max": 8}}
    doc["spec"]["workload"]["trace"] = {"uri": "s3://b/t.jsonl", "format": "mooncake"}
    spec = verification_spec(parse_benchmark(doc).spec, "g5-vllm", 2)
    assert spec.load.arrival == "poisson" and spec.workload.trace is None and spec.load.mode == "fixed"


def test_the_outcome_line_round_trips_and_fits_a_termination_message() -> None:
    levels = [_level(10.0, "meets"), _level(15.0, "fails", value=math.nan, low=math.nan, high=math.inf)]
    parsed = MasterOutcome.parse(MasterOutcome(levels=levels).line())
    assert parsed.levels[0] == levels[0]
    assert parsed.levels[1].value is None and parsed.levels[1].ci_high is None  # unbounded
    many = MasterOutcome(levels=[_level(float(i), "meets") for i in range(1, 100)]).line()
    assert len(many.encode()) < TERMINATION_MESSAGE_BYTES
    assert MasterOutcome.parse(many).levels[-1].rate == 99.0  # the latest stages are kept
    for bad in (None, "interrupted", "completed {not json", 'completed {"levels": [{"rate": 1}]}'):
        with pytest.raises(ValueError):
            MasterOutcome.parse(bad)


def test_the_verdict_is_the_stage_at_r_and_its_numbers_are_stated() -> None:
    spec = _verifying_bench(stepAbove=1.5).spec
    assert attempt_verdict(spec, [_level(10.0, "meets"), _level(15.0, "fails")])[0] == "Confirmed"
    assert attempt_verdict(spec, [_level(10.0, "fails")])[0] == "Refuted"
    assert attempt_verdict(spec, [_level(10.0, "inconclusive")])[0] == "Inconclusive"
    assert attempt_verdict(spec, [_level(15.0, "meets")]) == ("Inconclusive", None)
    # A stage run again (the endpoint came back) is judged by its last run
    assert attempt_verdict(spec, [_level(10.0, "fails"), _level(10.0, "meets")])[0] == "Confirmed"
    text = describe(spec, _level(10.0, "meets", 1.5, 1.4, 1.6))
    p = spec.slo.latency
    assert (
        text
        == f"p{p.percentile:g} {p.metric} 1.5 s [95% CI 1.4, 1.6] ≤ {p.max_seconds:g} s at 600 req/min (900 requests)"
    )


# -- the Verifying state -------------------------------------------------------------------------------


def _analyzed(bench: Benchmark, summary: dict[str, Any] | None = None) -> Decision:
    d = _through_to(bench, "Analyzing")
    done = JobState(succeeded=True, message=json.dumps(summary or SUMMARY))
    return _step(bench, d.status, 20, analysis=done)


def _fleet(n: int, **kw: Any) -> dict[str, Any]:
    return {"fleet": VariantObservation(**kw)}


def test_a_confirmed_fleet_ends_succeeded_with_verified_true() -> None:
    bench = _verifying_bench(stepAbove=1.5)
    d = _analyzed(bench)
    assert d.status["phase"] == "Verifying"
    ver = d.status["verification"]
    assert (ver["variant"], ver["computedInstances"], ver["instances"], ver["verdict"]) == ("g5-vllm", 3, 3, "Running")
    # the run's model servers make room for the fleet; the fleet is created, not yet its load
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-server") in d.delete
    created = _kinds(d)
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-x3-server") in created
    assert not [k for k in created if "-lg-" in k[1]]
    fleet = next(c for c in d.create if c["kind"] == "Deployment")
    assert fleet["spec"]["replicas"] == 3
    assert fleet["metadata"]["labels"][builders.LABEL_VARIANT] == "g5-vllm-x3"

    d = _step(bench, d.status, 30, fleet=VariantObservation(2))
    assert d.status["phase"] == "Verifying" and not [k for k in _kinds(d) if "-lg-" in k[1]]
    d = _step(bench, d.status, 40, fleet=VariantObservation(3))
    jobs = {c["metadata"]["name"]: c for c in d.create if c["kind"] == "Job"}
    master = jobs["llama31-8b-vllm-gpu-g5-vllm-x3-lg-master"]
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--verify") + 1] == "3" and args[args.index("--variant") + 1] == "g5-vllm"
    assert args[args.index("--output") + 1].endswith("/verify")
    assert "http://llama31-8b-vllm-gpu-g5-vllm-x3-server.ns.svc" in args[args.index("--endpoint-url") + 1]

    done = _master_done(_level(10.0, "meets"), _level(15.0, "fails", 2.5, 2.3, 2.8))
    d = _step(bench, d.status, 200, fleet=VariantObservation(3, master=done))
    assert d.status["phase"] == "Succeeded"
    verified = _cond(d, "Verified")
    assert (verified["status"], verified["reason"]) == ("True", "Confirmed")
    assert "3 × g5.2xlarge holds R" in verified["message"] and "step above" in verified["message"]
    ver = d.status["verification"]
    assert (ver["verdict"], ver["verifiedInstances"]) == ("Confirmed", 3)
    (attempt,) = ver["attempts"]
    assert attempt["requestsPerMinute"] == R and (attempt["sloCiLow"], attempt["sloCiHigh"]) == (1.4, 1.6)
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-x3-server") in d.delete
    assert d.status["message"].startswith("recommendation: ")


def test_a_refuted_n_tries_n_plus_one_and_reports_the_verified_n() -> None:
    bench = _verifying_bench(maxExtraInstances=1)
    d = _analyzed(bench)
    d = _step(bench, d.status, 30, fleet=VariantObservation(3))
    d = _step(bench, d.status, 200, fleet=VariantObservation(3, master=_master_done(_level(10.0, "fails"))))
    assert d.status["phase"] == "Verifying"
    ver = d.status["verification"]
    assert (ver["verdict"], ver["instances"], ver["loadStarted"]) == ("Refuted", 4, False)
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-x3-server") in d.delete
    assert any(e[1] == "Refuted" for e in d.events)
    d = _step(bench, d.status, 210)
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-x4-server") in _kinds(d)
    d = _step(bench, d.status, 220, fleet=VariantObservation(4))
    d = _step(bench, d.status, 400, fleet=VariantObservation(4, master=_master_done(_level(10.0, "meets"))))
    assert d.status["phase"] == "Succeeded"
    verified = _cond(d, "Verified")
    assert (verified["status"], verified["reason"]) == ("True", "MoreInstancesNeeded")
    ver = d.status["verification"]
    assert (ver["verdict"], ver["verifiedInstances"]) == ("Refuted", 4)
    assert [a["verdict"] for a in ver["attempts"]] == ["Refuted", "Confirmed"]


def test_refuted_up_to_the_limit_is_refuted_without_a_verified_n() -> None:
    bench = _verifying_bench(maxExtraInstances=0)
    d = _analyzed(bench)
    d = _step(bench, d.status, 30, fleet=VariantObservation(3))
    d = _step(bench, d.status, 200, fleet=VariantObservation(3, master=_master_done(_level(10.0, "fails"))))
    assert d.status["phase"] == "Succeeded"
    verified = _cond(d, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "Refuted")
    assert "verifiedInstances" not in d.status["verification"]


def test_an_inconclusive_fleet_is_not_called_verified() -> None:
    bench = _verifying_bench()
    d = _analyzed(bench)
    d = _step(bench, d.status, 30, fleet=VariantObservation(3))
    d = _step(bench, d.status, 200, fleet=VariantObservation(3, master=_master_done(_level(10.0, "inconclusive"))))
    assert (_cond(d, "Verified")["status"], _cond(d, "Verified")["reason"]) == ("False", "Inconclusive")
    assert d.status["verification"]["verdict"] == "Inconclusive"


@pytest.mark.parametrize(
    ("fleet", "at", "reason", "says"),
    [
        (VariantObservation(1, problem=("Unschedulable", "pod x: 0/1 nodes")), 30, "VerifyFailed", "Unschedulable"),
        (VariantObservation(1), 20 + 45 * 60 + 1, "VerifyFailed", "not Ready within spec.timeouts.modelReady"),
        (VariantObservation(3, master=JobState(failed=True, message="boom")), 60, "VerifyFailed", "boom"),
        (
            VariantObservation(3, master=JobState(succeeded=True, message="completed {]")),
            60,
            "VerifyFailed",
            "unreadable",
        ),
    ],
)
def test_a_fleet_that_cannot_be_measured_leaves_the_answer_standing(
    fleet: VariantObservation, at: float, reason: str, says: str
) -> None:
    bench = _verifying_bench()
    d = _analyzed(bench)
    if fleet.master is not None:
        d = _step(bench, d.status, 30, fleet=VariantObservation(3))
    d = _step(bench, d.status, at, fleet=fleet)
    assert d.status["phase"] == "Succeeded" and d.status["recommendation"]["instances"] == 3
    verified = _cond(d, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", reason) and says in verified["message"]
    assert d.status["verification"]["attempts"][0]["verdict"] == "Failed"


def test_no_recommendation_or_an_endpoint_is_not_verified() -> None:
    bench = _verifying_bench()
    d = _analyzed(bench, {**SUMMARY, "recommendation": None})
    assert d.status["phase"] == "Succeeded" and _cond(d, "Verified")["reason"] == "NoRecommendation"
    rec = {**SUMMARY["recommendation"], "variant": "ext", "instanceType": None}
    d = _analyzed(bench, {**SUMMARY, "recommendation": rec})
    assert d.status["phase"] == "Succeeded" and _cond(d, "Verified")["reason"] == "NotDeployable"
    assert "verification" not in d.status


def test_a_run_without_verify_has_no_verified_condition() -> None:
    d = _analyzed(_bench())
    assert d.status["phase"] == "Succeeded"
    assert "Verified" not in {c["type"] for c in d.status["conditions"]}


def test_a_deleted_or_timed_out_run_removes_the_fleet() -> None:
    bench = _verifying_bench()
    d = _analyzed(bench)
    d = _step(bench, d.status, 6 * 3600 + 1, fleet=VariantObservation(3))
    assert d.status["phase"] == "Failed"
    assert ("Deployment", "llama31-8b-vllm-gpu-g5-vllm-x3-server") in d.delete
    fleet = builders.fleet_children(bench, bench.spec.variants[0], UID, CFG, instances=3)
    assert all(c["metadata"]["ownerReferences"][0]["uid"] == UID for c in fleet)  # gone with the Benchmark
