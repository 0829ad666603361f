"""The load generator master: the start barrier, the stages, the SLO verdicts, the stages file.

It never sends load itself (except one warm-up request to check the endpoint answers). Per stage
it broadcasts a StagePlan with wall-clock times a little in the future, extends the steady window
when too few requests would land in it, collects every worker's StageResult (exact samples), and
judges the stage with contract.verdict.judge (the analysis's own rule). The planner then picks
the next level. After every stage it rewrites ``stages/<variant>.json`` and
``stages/<variant>.search.json``, so a master that dies leaves what it had.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import numpy as np

from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.contract.layout import search_key
from fmbench_k8s.contract.records import ClientHealth, StageInfo, stages_key
from fmbench_k8s.contract.stats import percentile
from fmbench_k8s.contract.verdict import SloRule, SloVerdict, StageCounts, judge
from fmbench_k8s.contract.verification import LevelResult
from fmbench_k8s.loadgen import messages as m
from fmbench_k8s.loadgen.clients import Client
from fmbench_k8s.loadgen.exporter import Exporter
from fmbench_k8s.loadgen.plan import Planner, endpoint_lost, planner_for, required_requests
from fmbench_k8s.loadgen.progress import ProgressSink
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.schedule import stage_seed
from fmbench_k8s.storage import Storage, patient

log = logging.getLogger("fmbench.loadgen")

LEAD_S = 0.5  # stage start is announced this far ahead, so every worker hears of it in time
RESULT_GRACE_S = 60.0  # after the drain: time for workers to flush records and report
ABORT_GRACE_S = 15.0
# Failures that mean "not up yet" (or throttled): the warm-up retries them until --ready-timeout.
RETRYABLE_WARMUP = ("connection_refused", "connection_reset", "timeout", "dns_error", "http_429", "http_502",
                    "http_503", "http_504", "truncated_stream", "host_unreachable")  # fmt: skip

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_WORKERS = 3
EXIT_ENDPOINT = 4
EXIT_WORKERS_LOST = 5
EXIT_INTERRUPTED = 130


class MasterError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StageOutcome:
    info: StageInfo
    verdict: SloVerdict
    results: list[m.StageResult]
    summary: dict[str, Any]


def samples(results: list[m.StageResult]) -> dict[str, np.ndarray]:
    """The workers' exact per-request samples of the window's ok requests, per metric."""
    return {
        k: np.concatenate([m.unpack(getattr(r, k), "<f4" if k == "itl" else "<f8") for r in results])
        if results else np.empty(0)
        for k in ("ttft", "e2e", "tpot", "itl")
    }  # fmt: skip


def window_counts(results: list[m.StageResult]) -> StageCounts:
    """The window's requests by outcome, over every worker."""
    return StageCounts(
        scheduled=sum(r.window_scheduled for r in results),
        ok=sum(r.window_ok for r in results),
        errors=sum(r.window_errors for r in results),
        incomplete=sum(r.window_incomplete for r in results),
    )


@dataclass
class Master:
    runner: Any
    spec: BenchmarkSpec
    variant: str
    storage: Storage
    progress: ProgressSink
    warmup_client: Client | None
    expect_workers: int
    worker_timeout: float = 300.0
    ready_timeout: float = 60.0
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, dict[str, m.StageResult]] = field(default_factory=dict)
    latest: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    stages: list[StageInfo] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    judged: list[LevelResult] = field(default_factory=list)  # the stages the planner was told, in order
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    lost: set[str] = field(default_factory=set)
    exporter: Exporter | None = None  # --metrics-port: the current stage and target as gauges

    # -- messages from workers ------------------------------------------------------------------

    def on_hello(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        self.workers[msg.node_id] = dict(msg.data or {})
        log.info("worker %s (%s) ready", self.workers[msg.node_id].get("worker"), msg.node_id)

    def on_progress(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        self.latest.setdefault(int(msg.data["stage"]), {})[msg.node_id] = msg.data

    def on_result(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        res = m.StageResult.from_msg(msg.data)
        self.results.setdefault(res.stage, {})[msg.node_id] = res

    def interrupt(self) -> None:
        self.interrupted = True

    # -- helpers -------------------------------------------------------------------------------

    def alive(self) -> list[str]:
        """Workers that said hello and whose Locust heartbeat is current, in a stable order."""
        from locust.runners import STATE_MISSING

        out = []
        for cid in sorted(self.workers):
            node = self.runner.clients.get(cid)
            if node is not None and node.state != STATE_MISSING and cid not in self.lost:
                out.append(cid)
        return out

    def _name(self, cid: str) -> str:
        return str(self.workers.get(cid, {}).get("worker", cid))

    def wait_for_workers(self) -> None:
        deadline = time.time() + self.worker_timeout
        while len(self.alive()) < self.expect_workers:
            if self.interrupted:
                raise MasterError(EXIT_INTERRUPTED, "interrupted while waiting for workers")
            if time.time() > deadline:
                raise MasterError(
                    EXIT_NO_WORKERS,
                    f"only {len(self.alive())} of {self.expect_workers} workers connected within "
                    f"{self.worker_timeout:.0f}s (--worker-timeout); check that the workers reach the master",
                )
            gevent.sleep(0.1)
        self.progress.emit("ready", workers=len(self.alive()), worker_ids=[self._name(c) for c in self.alive()])

    def warm_up(self) -> None:
        """One small request; retried while the endpoint is not up yet, fatal otherwise."""
        if self.warmup_client is None:
            return
        deadline = time.time() + self.ready_timeout
        attempt = 0
        while True:
            attempt += 1
            st = RequestState(f"warmup-{attempt}", time.time(), 4)
            self.warmup_client.generate(Prompt("Say hello to the benchmark", 2, 5), st)
            if st.outcome == "ok":
                log.info("warm-up request answered in %.3fs", (st.t_end or 0) - (st.t_sent or 0))
                # The server counts it too: what it cost, so its counters can be matched exactly.
                self.progress.emit("warmup", prompt_tokens=st.server_prompt_tokens,
                                   output_tokens=st.server_output_tokens)  # fmt: skip
                return
            reason = st.error or "unknown"
            if self.interrupted:
                raise MasterError(EXIT_INTERRUPTED, "interrupted during the warm-up request")
            if reason not in RETRYABLE_WARMUP or time.time() > deadline:
                raise MasterError(EXIT_ENDPOINT, f"endpoint unreachable: the warm-up request failed with {reason}"
                                  f" after {attempt} attempt(s) (--ready-timeout {self.ready_timeout:g}s)")  # fmt: skip
            gevent.sleep(min(1.0, max(0.0, deadline - time.time())))

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> int:
        load = self.spec.load
        planner = planner_for(load)
        try:
            self.warm_up()
            self.wait_for_workers()
            stage = 0
            retries = load.endpoint_retries
            while not self.interrupted:
                level = planner.next_level()
                if level is None:
                    break
                if not self.alive():
                    raise MasterError(EXIT_WORKERS_LOST, "all workers were lost; stopping")
                outcome = self.run_stage(stage, level, planner)
                lost = endpoint_lost(
                    [r.errors_by_reason for r in outcome.results],
                    sum(r.scheduled for r in outcome.results),
                    self.spec.slo.max_error_rate,
                )
                if lost is not None and not self.interrupted:
                    # Not a verdict on the level: keep the stage in the files, and do not tell the planner.
                    what = f"stage {stage} (level {level:g}): the endpoint stopped answering ({lost})"
                    note = "; ".join(filter(None, [outcome.info.note, f"endpoint unreachable ({lost})"]))
                    self.stages[-1] = outcome.info = outcome.info.model_copy(update={"note": note})
                    self._trace(stage, level, outcome)
                    stage += 1
                    if retries == 0:
                        raise MasterError(EXIT_ENDPOINT, f"{what}; no retries left (load.endpointRetries)")
                    retries -= 1
                    self.notes.append(f"{what}; the level is run again once the endpoint answers")
                    self.write_files(planner)
                    log.warning("%s; waiting up to %gs for it (--ready-timeout)", what, self.ready_timeout)
                    self.warm_up()
                    continue
                if outcome.verdict.kind == "interrupted":  # not a verdict on the level: c* stays as it was
                    self._trace(stage, level, outcome)
                    break
                planner.record(level, outcome.verdict.passed, outcome.verdict.reason)
                self.judged.append(_level_result(level, outcome))
                self._trace(stage, level, outcome)
                self.write_files(planner)
                self._emit_search(planner, level, outcome)
                stage += 1
        except MasterError as err:
            self.notes.append(str(err))
            self.write_files(planner)
            self.progress.emit("error", message=str(err), exit_code=err.code)
            self.progress.emit("done", stages=len(self.stages), c_star=planner.best, reason=str(err),
                               interrupted=err.code == EXIT_INTERRUPTED, exit_code=err.code,
                               notes=self.notes)  # fmt: skip
            return err.code
        code = EXIT_INTERRUPTED if self.interrupted else EXIT_OK
        if self.interrupted:
            self.notes.append("interrupted")
        self.write_files(planner)
        self.progress.emit("done", stages=len(self.stages), c_star=planner.best,
                           reason=planner.failure_reason or planner.note, interrupted=self.interrupted,
                           exit_code=code, notes=self.notes, degraded=bool(self.lost))  # fmt: skip
        return code

    def run_stage(self, stage: int, level: float, planner: Planner) -> StageOutcome:
        load = self.spec.load
        workers = self.alive()
        t_start = time.time() + LEAD_S
        steady_start = t_start + load.warmup_s
        plan = m.StagePlan(
            stage=stage, arrival=load.arrival, target=level, t_start=t_start, steady_start=steady_start,
            steady_end=steady_start + load.stage_duration_s,
            drain_end=steady_start + load.stage_duration_s + load.drain_s,
            seed=stage_seed(self.spec.workload.seed, self.variant, stage),
            workers={c: i for i, c in enumerate(workers)},
        )  # fmt: skip
        self.runner.send_message(m.STAGE, plan.to_msg())
        self._gauges(stage, level)
        eta = self._eta(plan, planner)
        self.progress.emit("stage_start", stage=stage, target=level, mode=load.arrival, workers=len(workers),
                           t_start=plan.t_start, steady_start=plan.steady_start, steady_end=plan.steady_end,
                           drain_end=plan.drain_end, eta_s=eta)  # fmt: skip
        steady_end, drain_end = plan.steady_end, plan.drain_end
        limit = steady_start + 3 * load.stage_duration_s
        aborted = False
        lost_here: list[str] = []
        last_progress = 0.0
        abort_deadline = math.inf
        while True:
            now = time.time()
            got = self.results.get(stage, {})
            waiting = [c for c in workers if c not in got and c not in lost_here]
            if not waiting:
                break
            if self.interrupted and not aborted:
                self.runner.send_message(m.ABORT, {"stage": stage, "reason": "interrupted"})
                aborted = True
                abort_deadline = now + ABORT_GRACE_S
            for cid in waiting:
                if cid not in self.alive():
                    lost_here.append(cid)
                    self.lost.add(cid)
                    log.error("worker %s lost during stage %d", self._name(cid), stage)
            if now > min(drain_end + RESULT_GRACE_S, abort_deadline):
                for cid in waiting:
                    lost_here.append(cid)
                    log.error("worker %s sent no result for stage %d", self._name(cid), stage)
                break
            if not aborted and steady_end < limit and now < steady_end:
                new_end = self._extension(stage, plan, steady_end, limit, now)
                if new_end is not None:
                    drain_end += new_end - steady_end
                    steady_end = new_end
                    self.runner.send_message(m.EXTEND, {"stage": stage, "steady_end": steady_end,
                                                        "drain_end": drain_end})  # fmt: skip
                    log.info("stage %d: steady window extended to %.1fs", stage, steady_end - steady_start)
            if now - last_progress >= 1.0:
                last_progress = now
                self._emit_progress(stage, level, plan, steady_end=steady_end, drain_end=drain_end, planner=planner)
            gevent.sleep(0.05)
        results = [self.results.get(stage, {})[c] for c in workers if c in self.results.get(stage, {})]
        notes = self._stage_notes(plan, steady_end, lost_here, results, aborted=aborted)
        self._gauges(-1, None)
        return self._judge(
            stage, level, plan, steady_end=steady_end, results=results, notes=notes, n_workers=len(workers),
            interrupted=aborted,
        )  # fmt: skip

    def _stage_notes(
        self, plan: m.StagePlan, steady_end: float, lost: list[str], results: list[m.StageResult], *, aborted: bool
    ) -> list[str]:
        """What the stage's verdict must be read with: a longer window, lost workers, an interruption."""
        notes: list[str] = []
        if steady_end > plan.steady_end:
            window = f"from {self.spec.load.stage_duration_s:g}s to {steady_end - plan.steady_start:.1f}s"
            notes.append(f"steady window extended {window} to reach {required_requests(self.spec)} requests")
        if lost:
            names = ", ".join(self._name(c) for c in lost)
            missing = "their records since the last flush (at most 2 s) are missing and the stage's counts are partial"
            notes.append(f"worker(s) {names} lost during the stage: {missing}")
        if aborted:
            notes.append("interrupted")
        return notes + [f"{self._name(r.client_id)}: {r.note}" for r in results if r.note]

    def _gauges(self, stage: int, level: float | None) -> None:
        if self.exporter is None:
            return
        labels = self.exporter.labels
        self.exporter.stage.labels(**labels).set(stage)
        if level is not None:
            closed = self.spec.load.arrival == "closed"
            gauge = self.exporter.target_concurrency if closed else self.exporter.target_rate
            gauge.labels(**labels).set(level)

    def _extension(self, stage: int, plan: m.StagePlan, steady_end: float, limit: float, now: float) -> float | None:
        """A later steady end when the window would hold fewer requests than required_requests."""
        load = self.spec.load
        # Decide in the window's last second (half of a short window): late enough to project
        # from a real count, early enough that a stalled master still decides in time.
        margin = min(1.0, 0.5 * load.stage_duration_s)
        if now < steady_end - margin:
            return None
        reports = self.latest.get(stage, {})
        if not reports:
            return None
        count = sum(int(r["window_scheduled"]) for r in reports.values())
        as_of = min(float(r["as_of"]) for r in reports.values())
        elapsed = as_of - plan.steady_start
        if elapsed <= 0:
            return None
        window = steady_end - plan.steady_start
        projected = count * window / elapsed
        need = required_requests(self.spec)
        if projected >= need:
            return None
        rate = max(count / elapsed, 1e-9)
        wanted = plan.steady_start + 1.1 * need / rate
        return min(limit, max(wanted, steady_end + margin * 2))

    def _judge(self, stage: int, level: float, plan: m.StagePlan, *, steady_end: float,
               results: list[m.StageResult], notes: list[str], n_workers: int,
               interrupted: bool) -> StageOutcome:  # fmt: skip
        load, slo = self.spec.load, self.spec.slo
        cat = samples(results)
        counts = window_counts(results)
        verdict = judge(cat, counts, SloRule.of(self.spec), interrupted=interrupted)
        client_bound = any(bool(r.selfcheck.get("client_bound")) for r in results)
        if client_bound:
            notes.append("client-bound: a worker's event loop lagged (p99 > 50 ms) or its CPU was > 90%; "
                         "add workers before trusting this stage's latencies")  # fmt: skip
        end = max([r.t_end for r in results] or [plan.drain_end])
        client = client_health(results)
        info = StageInfo(
            variant=self.variant, stage=stage,
            target_concurrency=level if load.arrival == "closed" else None,
            target_rate=level if load.arrival != "closed" else None,
            start=plan.t_start, steady_start=plan.steady_start, steady_end=steady_end, end=max(end, steady_end),
            workers=max(1, n_workers), client_bound=client_bound, client=client, note="; ".join(notes) or None,
            interrupted=interrupted,
        )  # fmt: skip
        self.stages.append(info)
        window = steady_end - plan.steady_start
        reasons: dict[str, int] = {}
        for r in results:
            for k, v in r.errors_by_reason.items():
                reasons[k] = reasons.get(k, 0) + int(v)
        summary = {
            "stage": stage, "target": level, "requests": sum(r.scheduled for r in results),
            "ok": sum(r.ok for r in results), "errors": sum(r.errors for r in results),
            "incomplete": sum(r.incomplete for r in results),
            "window_requests": counts.scheduled, "window_ok": counts.ok, "window_errors": counts.errors,
            "window_incomplete": counts.incomplete, "errors_by_reason": reasons,
            "ttft_p50": percentile(cat["ttft"], 50), "ttft_p95": percentile(cat["ttft"], 95),
            "e2e_p50": percentile(cat["e2e"], 50), "e2e_p95": percentile(cat["e2e"], 95),
            "tpot_p95": percentile(cat["tpot"], 95), "itl_p95": percentile(cat["itl"], 95),
            "slo_metric": slo.latency.metric, "slo_percentile": slo.latency.percentile, "slo_value": verdict.value,
            "slo_ci_low": verdict.ci.low, "slo_ci_high": verdict.ci.high, "error_rate": verdict.error_rate,
            "meets_slo": verdict.passed, "slo_outcome": verdict.outcome, "slo_verdict": verdict.kind,
            "reason": verdict.reason,
            "throughput_rpm": counts.scheduled / window * 60 if window > 0 else None,
            "output_tokens_per_s": sum(r.window_output_tokens for r in results) / window if window > 0 else None,
            "schedule_lag_p99_s": client.schedule_lag_p99_s,
            "client_bound": client_bound, "rows_written": sum(r.rows_written for r in results),
            "loop_lag_p99_s": client.loop_lag_p99_s,
            "loop_lag_max_s": max((float(r.selfcheck.get("loop_lag_max_s", 0.0)) for r in results), default=None),
            "client_cpu_percent": client.cpu_percent, "client_rss_mb": client.rss_mb,
            "note": info.note,
        }  # fmt: skip
        self.progress.emit("stage_end", **summary, eta_s=None)
        return StageOutcome(info, verdict, results, summary)

    def _emit_progress(self, stage: int, level: float, plan: m.StagePlan, *, steady_end: float, drain_end: float,
                       planner: Planner) -> None:  # fmt: skip
        reports = self.latest.get(stage, {}).values()
        now = time.time()
        self.progress.emit(
            "progress", stage=stage, target=level,
            requests=sum(int(r["done"]) for r in reports), ok=sum(int(r["ok"]) for r in reports),
            errors=sum(int(r["errors"]) for r in reports), inflight=sum(int(r["inflight"]) for r in reports),
            window_requests=sum(int(r["window_scheduled"]) for r in reports),
            phase="warmup" if now < plan.steady_start else "steady" if now < steady_end else "drain",
            eta_s=max(0.0, drain_end - now) + self._per_stage() * max(0, planner.remaining_upper_bound() - 1),
        )  # fmt: skip

    def _per_stage(self) -> float:
        load = self.spec.load
        if self.stages:
            return float(np.mean([s.end - s.start for s in self.stages])) + LEAD_S
        return LEAD_S + load.warmup_s + load.stage_duration_s + load.drain_s / 2

    def _eta(self, plan: m.StagePlan, planner: Planner) -> float:
        return self._per_stage() * max(1, planner.remaining_upper_bound())

    def _trace(self, stage: int, level: float, outcome: StageOutcome) -> None:
        s = outcome.summary
        self.trace.append({
            "stage": stage, "level": level, "passed": outcome.verdict.passed, "outcome": outcome.verdict.outcome,
            "verdict": outcome.verdict.kind, "slo_value": outcome.verdict.value,
            "error_rate": outcome.verdict.error_rate, "requests": s["window_requests"],
            "reason": outcome.verdict.reason, "note": outcome.info.note,
        })  # fmt: skip

    def _emit_search(self, planner: Planner, level: float, outcome: StageOutcome) -> None:
        nxt = planner.next_level() if not self.interrupted else None
        decision = "stop" if nxt is None else ("higher" if nxt > level else "lower")
        self.progress.emit("search", stage=outcome.info.stage, target=level, passed=outcome.verdict.passed,
                           decision=decision, next=nxt, c_star=planner.best)  # fmt: skip

    def write_files(self, planner: Planner) -> None:
        load, lat = self.spec.load, self.spec.slo.latency
        stages_doc = [s.model_dump(mode="json") for s in self.stages]
        search_doc = {
            "variant": self.variant, "mode": load.mode, "arrival": load.arrival,
            "unit": "concurrency" if load.arrival == "closed" else "requests/s",
            "slo": {"metric": lat.metric, "percentile": lat.percentile, "maxSeconds": lat.max_seconds,
                    "maxErrorRate": self.spec.slo.max_error_rate},
            "tolerance": load.tolerance, "maxStages": load.max_stages,
            "levels": self.trace, "c_star": planner.best,
            "reason": planner.failure_reason, "decision": planner.note or (
                "c* found" if planner.best is not None else "no level met the SLO" if planner.trials else "not run"),
            "interrupted": self.interrupted, "workers_lost": sorted(self._name(c) for c in self.lost),
            "notes": self.notes,
        }  # fmt: skip
        storage = patient(self.storage)  # the run is over: wait out a storage outage rather than lose them
        try:
            storage.write_bytes(stages_key(self.variant), json.dumps(stages_doc, indent=1).encode())
            storage.write_bytes(search_key(self.variant), json.dumps(_finite(search_doc), indent=1).encode())
        except Exception as exc:
            log.error("writing the stages files failed: %s", exc)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def client_health(results: list[m.StageResult]) -> ClientHealth:
    """The stage's client figures, each the worst worker's."""

    def worst(values: list[float]) -> float | None:
        return max(values) if values else None

    return ClientHealth(
        schedule_lag_p99_s=worst([r.schedule_lag_p99_s for r in results if r.schedule_lag_p99_s is not None]),
        loop_lag_p99_s=worst(
            [float(r.selfcheck["loop_lag_p99_s"]) for r in results if "loop_lag_p99_s" in r.selfcheck]
        ),
        cpu_percent=worst(
            [float(r.selfcheck["cpu_mean_percent"]) for r in results if "cpu_mean_percent" in r.selfcheck]
        ),
        rss_mb=worst([float(r.selfcheck["rss_mb"]) for r in results if "rss_mb" in r.selfcheck]),
    )


def _level_result(level: float, outcome: StageOutcome) -> LevelResult:
    v = outcome.verdict
    return LevelResult.of(
        rate=level, outcome=v.outcome, kind=v.kind, value=v.value, ci_low=v.ci.low, ci_high=v.ci.high,
        requests=int(outcome.summary["window_requests"]), error_rate=v.error_rate, reason=v.reason,
    )  # fmt: skip
