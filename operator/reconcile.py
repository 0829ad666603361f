"""The Benchmark state machine, as a pure function of what the operator observed.

Pending → Deploying → Running → Analyzing → [Verifying →] Succeeded | Failed. Each call returns the objects to
create (create-if-absent), the objects to delete, the status to write, the events to emit and when
to look again. The kopf handlers only gather observations and carry out decisions, so every
transition and failure path is unit-tested here without a cluster, and a restarted operator
continues from the status it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fmbench_k8s.api.benchmark import Benchmark
from fmbench_k8s.api.spec import Variant
from fmbench_k8s.api.status import TERMINAL_PHASES
from fmbench_k8s.contract.engines import cluster_problems
from fmbench_k8s.contract.layout import run_id
from fmbench_k8s.contract.summary import OperatorSummary
from fmbench_k8s.contract.verification import MasterOutcome, attempt_verdict, describe, fleet_variant
from fmbench_k8s.durations import parse_duration
from fmbench_k8s.operator import builders
from fmbench_k8s.operator.builders import OperatorConfig


@dataclass(frozen=True)
class JobState:
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    message: str | None = None  # failure reason, or the container's termination message
    refused: bool = False  # its pods could not be created (FailedCreate): failed before running


@dataclass(frozen=True)
class VariantObservation:
    ready_replicas: int = 0
    node_instance_types: tuple[str, ...] = ()
    problem: tuple[str, str] | None = None  # (Reason, message) of a model server pod that cannot run
    master: JobState | None = None
    workers: JobState | None = None
    node_capacity_types: tuple[str, ...] = ()  # on-demand, spot, reserved: what the nodes were bought at


@dataclass(frozen=True)
class Observation:
    now: datetime
    created: datetime
    uid: str
    generation: int
    status: dict[str, Any]
    variants: dict[str, VariantObservation] = field(default_factory=dict)
    analysis: JobState | None = None
    fleet: VariantObservation | None = None  # Verifying: the fleet under test and its load generator


@dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = 5.0


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class _Machine:
    def __init__(self, bench: Benchmark, obs: Observation, cfg: OperatorConfig) -> None:
        self.bench, self.obs, self.cfg = bench, obs, cfg
        self.status: dict[str, Any] = {k: v for k, v in obs.status.items() if k != "conditions"}
        self.conditions: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in obs.status.get("conditions", [])}
        self.decision = Decision(status=self.status)
        self.variants: dict[str, dict[str, Any]] = {v["name"]: dict(v) for v in obs.status.get("variants", [])}
        for v in bench.spec.variants:
            self.variants.setdefault(v.name, {"name": v.name, "phase": "Pending", "readyReplicas": 0, "stagesDone": 0})

    # -- helpers -------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    def condition(self, ctype: str, ok: bool, reason: str, message: str) -> None:
        status = "True" if ok else "False"
        old = self.conditions.get(ctype) or {}
        changed = old.get("status") != status
        self.conditions[ctype] = {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message[:2000],
            "lastTransitionTime": _iso(self.obs.now) if changed else old.get("lastTransitionTime", _iso(self.obs.now)),
            "observedGeneration": self.obs.generation,
        }

    def move(self, phase: str, message: str, reason: str | None = None) -> None:
        if phase == self.phase:
            return
        self.status["phase"] = phase
        self.status["phaseStartTime"] = _iso(self.obs.now)
        self.status["message"] = message[:2000]
        kind = "Warning" if phase == "Failed" else "Normal"
        self.decision.events.append((kind, reason or phase, message[:1000]))
        if phase in TERMINAL_PHASES:
            self.status["completionTime"] = _iso(self.obs.now)
            self.condition("Ready", phase == "Succeeded", reason or phase, message)
            self.decision.delete += self._cleanup(phase)
            self.decision.requeue_after = None
        else:
            self.condition("Ready", False, phase, message)

    def fail(self, reason: str, message: str) -> None:
        self.move("Failed", message, reason)

    def in_phase_for(self) -> float:
        start = self.status.get("phaseStartTime")
        return (self.obs.now - _parse_iso(start)).total_seconds() if start else 0.0

    def _cleanup(self, phase: str) -> list[tuple[str, str]]:
        policy = self.bench.spec.cleanup
        if policy == "Never" or (policy == "OnSuccess" and phase != "Succeeded"):
            return []
        out = self._servers()
        fleet = self._fleet()
        if fleet is not None:
            out += self._fleet_servers(fleet)
        # Stop scraping the endpoints (a ScrapeConfig never made, as after a rejection, is absent).
        out += [
            ("ScrapeConfig", builders.scrape_config_name(self.bench, v))
            for v in builders.scraped_endpoints(self.bench, self.cfg)
        ]
        return out

    def _servers(self) -> list[tuple[str, str]]:
        """The model servers of the run (not of the verify phase)."""
        out: list[tuple[str, str]] = []
        for v in self.bench.spec.variants:
            if v.engine is not None:
                name = builders.server_name(self.bench, v)
                out += [("Deployment", name), ("Service", name)]
        return out

    def _fleet(self) -> Variant | None:
        """The verify phase's fleet under test now, if any."""
        ver = self.status.get("verification")
        return fleet_variant(self._verified(), int(ver["instances"])) if ver else None

    def _verified(self) -> Variant:
        """The variant the verify phase deploys (status.verification.variant)."""
        return next(v for v in self.bench.spec.variants if v.name == self.status["verification"]["variant"])

    def _fleet_servers(self, fleet: Variant) -> list[tuple[str, str]]:
        name = builders.server_name(self.bench, fleet)
        return [("Deployment", name), ("Service", name), ("Service", builders.master_name(self.bench, fleet))]

    # -- phases ----------------------------------------------------------------------------------
    def step(self) -> Decision:
        if self.phase in TERMINAL_PHASES:
            self.decision.requeue_after = None
            return self.finish()
        self.status["observedGeneration"] = self.obs.generation
        if self._run_deadline_passed():
            return self.finish()
        phases = {"Pending": self.pending, "Deploying": self.deploying, "Running": self.running}
        phases |= {"Analyzing": self.analyzing, "Verifying": self.verifying}
        phases[self.phase]()
        return self.finish()

    def _run_deadline_passed(self) -> bool:
        limit = parse_duration(self.bench.spec.timeouts.run)
        if (self.obs.now - self.obs.created).total_seconds() > limit:
            self.fail("RunTimeout", f"the run exceeded spec.timeouts.run ({self.bench.spec.timeouts.run})")
            return True
        return False

    def pending(self) -> None:
        problems = cluster_problems(self.bench) + placement_problems(self.bench, self.cfg)
        if problems:
            self.fail("InvalidSpec", "; ".join(problems))
            return
        self.status["runId"] = run_id(self.obs.created, self.obs.uid)
        self.status["startTime"] = _iso(self.obs.now)
        self.condition("ModelServersReady", False, "Deploying", "creating model servers")
        self.move("Deploying", "deploying model servers")
        self.deploying()

    def deploying(self) -> None:
        self.decision.create += builders.server_children(self.bench, self.obs.uid, self.cfg)
        not_ready = []
        for v in self.bench.spec.variants:
            vs = self.variants[v.name]
            if v.engine is None:
                vs["phase"] = "Ready"
                continue
            seen = self.obs.variants.get(v.name, VariantObservation())
            vs["readyReplicas"] = seen.ready_replicas
            vs["nodeInstanceTypes"] = list(seen.node_instance_types)
            if seen.node_capacity_types:
                vs["nodeCapacityTypes"] = list(seen.node_capacity_types)
            if seen.problem is not None:
                reason, message = seen.problem
                vs["phase"], vs["message"] = "Failed", f"{reason}: {message}"
                self.condition("ModelServersReady", False, reason, f"variant {v.name}: {message}")
                self.fail(reason, f"variant {v.name}: {reason}: {message}")
                return
            if seen.ready_replicas >= v.replicas:
                vs["phase"] = "Ready"
            else:
                vs["phase"] = "Deploying"
                not_ready.append(f"{v.name} {seen.ready_replicas}/{v.replicas}")
        if not_ready:
            limit = parse_duration(self.bench.spec.timeouts.model_ready)
            if self.in_phase_for() > limit:
                message = (
                    f"model servers not Ready within spec.timeouts.modelReady "
                    f"({self.bench.spec.timeouts.model_ready}): {', '.join(not_ready)}"
                )
                self.condition("ModelServersReady", False, "ReadinessTimeout", message)
                self.fail("ReadinessTimeout", message)
            return
        self.condition("ModelServersReady", True, "AllReady", "every model server is Ready")
        self.condition("LoadComplete", False, "Running", "load stages running")
        self.move("Running", "running load stages")
        self.running()

    def running(self) -> None:
        run_id = str(self.status["runId"])
        self.decision.create += builders.data_plane_children(self.bench, self.obs.uid, run_id, self.cfg)
        pending = []
        for v in self.bench.spec.variants:
            vs = self.variants[v.name]
            seen = self.obs.variants.get(v.name, VariantObservation())
            if v.engine is not None and seen.problem is not None:
                reason, message = seen.problem
                vs["phase"], vs["message"] = "Failed", f"{reason}: {message}"
                self.fail(reason, f"variant {v.name}: model server failed during load: {reason}: {message}")
                return
            # Workers whose pods are refused outright; a worker that ran and failed is the master's to report.
            if seen.workers is not None and seen.workers.refused:
                vs["phase"], vs["message"] = "Failed", seen.workers.message or "FailedCreate"
                self.condition("LoadComplete", False, "LoadFailed", f"variant {v.name}: {vs['message']}")
                self.fail("LoadFailed", f"variant {v.name}: load generator workers: {vs['message']}")
                return
            job = seen.master
            if job is not None and job.failed:
                vs["phase"] = "Failed"
                vs["message"] = job.message or "load generator failed"
                self.condition("LoadComplete", False, "LoadFailed", f"variant {v.name}: {vs['message']}")
                self.fail("LoadFailed", f"variant {v.name}: load generator failed: {vs['message']}")
                return
            if job is not None and job.succeeded:
                vs["phase"] = "Done"
            else:
                vs["phase"] = "Running"
                pending.append(v.name)
        if pending:
            return
        self.condition("LoadComplete", True, "AllStagesDone", "every variant's load stages completed")
        self.condition("Analyzed", False, "Analyzing", "analysis job running")
        self.move("Analyzing", "analysing records")
        self.analyzing()

    def analyzing(self) -> None:
        ran_on = {name: vs.get("nodeInstanceTypes") or [] for name, vs in self.variants.items()}
        bought = {name: vs.get("nodeCapacityTypes") or [] for name, vs in self.variants.items()}
        run_id = str(self.status["runId"])
        self.decision.create.append(
            builders.analysis_job(self.bench, self.obs.uid, run_id, self.cfg, ran_on=ran_on, bought=bought)
        )
        job = self.obs.analysis
        if job is None or not (job.succeeded or job.failed):
            return
        if job.failed:
            self.condition("Analyzed", False, "AnalysisFailed", job.message or "analysis job failed")
            self.fail("AnalysisFailed", f"analysis job failed: {job.message or 'no message'}")
            return
        try:
            summary = OperatorSummary.parse(job.message or "")
        except ValueError as err:
            self.condition("Analyzed", False, "AnalysisFailed", str(err))
            self.fail("AnalysisFailed", str(err))
            return
        self._apply_summary(summary)
        self.condition("Analyzed", True, "ReportWritten", "report computed")
        if summary.report_uri:
            self.status["report"] = {"uri": summary.report_uri}
            self.condition("ReportPublished", True, "Uploaded", summary.report_uri)
        rec = summary.recommendation
        if rec:
            message = f"recommendation: {rec.headline()}"
            self.condition("Recommended", True, "LowerBound" if rec.lower_bound else "CapacityMeasured", message)
        else:
            message = "no variant meets the SLO with a known price: there is no recommendation"
            self.condition("Recommended", False, "NoVariantMeetsSlo", message)
        if self.bench.spec.verify is not None and self._start_verifying(summary):
            return
        self.move("Succeeded", message, "Succeeded")

    # -- the verify phase (docs/verify.md) -------------------------------------------------------
    def _start_verifying(self, summary: OperatorSummary) -> bool:
        """Verifying the recommendation, or the reason it cannot be (a Verified=False condition)."""
        rec = summary.recommendation
        if rec is None:
            self.condition("Verified", False, "NoRecommendation", "there is no recommendation to verify")
            return False
        variant = next(v for v in self.bench.spec.variants if v.name == rec.variant)
        if variant.engine is None:
            message = f"{rec.variant} is an existing endpoint: the operator cannot deploy {rec.instances} of it"
            self.condition("Verified", False, "NotDeployable", message)
            return False
        n = rec.instances
        self.status["verification"] = {
            "variant": variant.name, "instanceType": variant.instance_type, "computedInstances": n,
            "instances": n, "verdict": "Running", "attemptStartTime": _iso(self.obs.now), "loadStarted": False,
            "attempts": [],
        }  # fmt: skip
        # The run's model servers hold the accelerators the fleet needs, whatever spec.cleanup says.
        self.decision.delete += self._servers()
        self.condition("Verified", False, "Verifying", f"deploying {n} × {variant.instance_type}")
        self.move("Verifying", f"verifying {rec.headline()}")
        self.verifying()
        return True

    def verifying(self) -> None:
        ver = self.status["verification"]
        fleet = self._fleet()
        assert fleet is not None and self.bench.spec.verify is not None
        variant = self._verified()
        n, uid, seen = fleet.replicas, self.obs.uid, self.obs.fleet or VariantObservation()
        if seen.problem is not None:
            reason, message = seen.problem
            return self._attempt_done("Failed", f"the fleet of {n}: {reason}: {message}")
        self.decision.create += builders.fleet_children(self.bench, variant, uid, self.cfg, instances=n)
        if not ver["loadStarted"]:
            if seen.ready_replicas < n:
                waited = (self.obs.now - _parse_iso(ver["attemptStartTime"])).total_seconds()
                if waited > self.bench.spec.timeouts.model_ready_s:
                    self._attempt_done(
                        "Failed",
                        f"the fleet of {n} was not Ready within spec.timeouts.modelReady "
                        f"({self.bench.spec.timeouts.model_ready}): {seen.ready_replicas}/{n}",
                    )
                return
            ver["loadStarted"] = True
        run_id = str(self.status["runId"])
        self.decision.create += builders.fleet_load_children(self.bench, variant, uid, run_id, self.cfg, instances=n)
        for job, what in ((seen.workers, "workers"), (seen.master, "master")):
            if job is not None and job.failed and (job.refused or what == "master"):
                return self._attempt_done("Failed", f"load generator {what}: {job.message or 'failed'}")
        if seen.master is None or not seen.master.succeeded:
            return
        try:
            levels = MasterOutcome.parse(seen.master.message).levels
        except ValueError as err:
            return self._attempt_done("Failed", str(err))
        verdict, at_r = attempt_verdict(self.bench.spec, levels)
        numbers = describe(self.bench.spec, at_r) if at_r is not None else "no stage at R was judged"
        above = [describe(self.bench.spec, lv) for lv in levels if at_r is not None and lv.rate > at_r.rate]
        message = "; ".join(
            [numbers, *(f"step above: {a}" for a in above), *([at_r.reason] if at_r and at_r.reason else [])]
        )
        attempt: dict[str, Any] = {"instances": n, "verdict": verdict, "message": message[:1000]}
        if at_r is not None:
            attempt |= {
                "requestsPerMinute": at_r.rate * 60, "sloSeconds": at_r.value, "sloCiLow": at_r.ci_low,
                "sloCiHigh": at_r.ci_high, "requests": at_r.requests,
            }  # fmt: skip
        self._attempt_done(verdict, message, attempt)

    def _attempt_done(self, verdict: str, message: str, attempt: dict[str, Any] | None = None) -> None:
        ver = self.status["verification"]
        fleet = self._fleet()
        assert fleet is not None and self.bench.spec.verify is not None
        n = fleet.replicas
        ver["attempts"] = [*ver["attempts"], attempt or {"instances": n, "verdict": verdict, "message": message[:1000]}]
        self.decision.delete += self._fleet_servers(fleet)
        computed = int(ver["computedInstances"])
        if n == computed:
            ver["verdict"] = verdict
        if verdict == "Refuted" and n < computed + self.bench.spec.verify.max_extra_instances:
            ver |= {"instances": n + 1, "attemptStartTime": _iso(self.obs.now), "loadStarted": False}
            self.status["message"] = f"{n} × {fleet.instance_type} refuted ({message}); verifying {n + 1}"[:2000]
            self.decision.events.append(("Normal", "Refuted", self.status["message"][:1000]))
            return
        if verdict == "Confirmed":
            ver["verifiedInstances"] = n
            reason = "Confirmed" if n == computed else "MoreInstancesNeeded"
            text = f"{n} × {fleet.instance_type} holds R: {message}"
            if n != computed:
                text = f"the computed {computed} did not hold R; {text}"
        else:
            reason = verdict if verdict in ("Refuted", "Inconclusive") else "VerifyFailed"
            text = f"{n} × {fleet.instance_type}: {verdict.lower()}: {message}"
        self.condition("Verified", verdict == "Confirmed", reason, text)
        recommended = (self.conditions.get("Recommended") or {}).get("message", "")
        self.move("Succeeded", f"{recommended}; verified: {text}", "Succeeded")

    def _apply_summary(self, summary: OperatorSummary) -> None:
        if summary.recommendation is not None:
            self.status["recommendation"] = summary.recommendation.status()
        for v in summary.variants:
            vs = self.variants.get(v.name)
            if vs is None:
                continue
            if v.max_concurrency_meeting_slo is not None:
                vs["maxConcurrencyMeetingSlo"] = v.max_concurrency_meeting_slo
                vs["capacityLowerBound"] = v.capacity_lower_bound
            vs["stagesDone"] = v.stages
            missing = (
                f"bucket(s) {', '.join(v.buckets_missing_slo)} miss the SLO at the level the variant is sized at"
                if v.buckets_missing_slo
                else None
            )
            message = "; ".join(m for m in (v.reason, missing) if m)
            if message:
                vs["message"] = message[:500]

    def finish(self) -> Decision:
        self.status["conditions"] = list(self.conditions.values())
        self.status["variants"] = [self.variants[v.name] for v in self.bench.spec.variants]
        return self.decision


def placement_problems(bench: Benchmark, cfg: OperatorConfig) -> list[str]:
    """Tolerations and node selectors beyond what the cluster's install allows (chart values
    modelServers.allowed*Keys), one line each naming the key and the setting."""
    out = []
    taints, labels = cfg.allowed_toleration_keys, cfg.allowed_node_selector_keys
    for i, v in enumerate(bench.spec.variants):
        for j, t in enumerate(v.tolerations):
            if taints and t.key not in taints:
                out.append(
                    f"spec.variants[{i}].tolerations[{j}].key: {t.key} is not among the taints this cluster lets "
                    f"benchmarks tolerate ({', '.join(taints)}; modelServers.allowedTolerationKeys)"
                )
        for key in v.node_selector:
            if labels and key not in labels:
                out.append(
                    f"spec.variants[{i}].nodeSelector: {key} is not among the labels this cluster lets benchmarks "
                    f"select ({', '.join(labels)}; modelServers.allowedNodeSelectorKeys)"
                )
    return out


def reconcile(bench: Benchmark, obs: Observation, cfg: OperatorConfig) -> Decision:
    """One step of the state machine."""
    return _Machine(bench, obs, cfg).step()


def rejected(bench: Benchmark, obs: Observation, cfg: OperatorConfig, message: str) -> Decision:
    """The run fails at once when the API server refuses a child it would refuse every time
    (quota, admission, RBAC): not hours later at ``timeouts.run``, with accelerators held."""
    machine = _Machine(bench, obs, cfg)
    machine.status["observedGeneration"] = obs.generation
    machine.fail("Rejected", message)
    return machine.finish()
