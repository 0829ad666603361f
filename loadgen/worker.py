"""A load generator worker: runs its share of each stage the master announces.

Greenlets are driven here, not by Locust's user spawning: closed loop runs one greenlet per user
slot of this worker's share (slot loops send back to back); open loop runs one dispatcher that
sleeps until each of this worker's arrivals and hands it to a request greenlet (loadgen/runners.py;
in flight capped at ``max_inflight``: an arrival that waited for a free one is sent late and shows
``t_sent - t_scheduled > 0``). Every request is tracked from the moment it is scheduled until its
row is written; whatever is still in flight when the drain period ends is killed and written as
``incomplete``. Locust's ``request`` event is fired for every request so its live statistics
and web UI work.

In the open loop the prompts and request bodies are made ahead, a few at a time
(``prompts.make_ahead``), by the dispatcher once the request it just handed out is on its way:
made one by one, each when its request starts, they cost several times as much (the worker
wakes with cold caches; ~100 of a request's ~400 µs in situ at 400 streams, docs/performance.md).

A finished request is accounted (its row, metrics, counters and Locust event) with the others
that finished since, every ``PROGRESS_INTERVAL_S``, not by its own greenlet when it ends: run
back to back, that Python is cheaper than spread over the hub's wake-ups (~3% of a worker's CPU
at 250 streams, docs/performance.md). Nothing waits on a timer while a stage runs but the
arrivals, the self-check and these intervals: the stage's own greenlet sleeps until its window
ends or the master changes it (``StageRun.changed``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import gevent
import numpy as np
from gevent.event import Event

from fmbench_k8s.api.spec import Workload
from fmbench_k8s.contract.images import pixel_class
from fmbench_k8s.contract.records import OUTCOME_ERROR, OUTCOME_OK
from fmbench_k8s.loadgen import messages as m
from fmbench_k8s.loadgen.clients import Client
from fmbench_k8s.loadgen.exporter import Exporter
from fmbench_k8s.loadgen.plan import UNREACHABLE, split_concurrency
from fmbench_k8s.loadgen.prompts import Corpus, Prompt, PromptSource, make_ahead
from fmbench_k8s.loadgen.request import RequestState, StageContext, to_row
from fmbench_k8s.loadgen.runners import Runners
from fmbench_k8s.loadgen.schedule import worker_offsets
from fmbench_k8s.loadgen.selfcheck import Monitor
from fmbench_k8s.loadgen.sessions import Sessions
from fmbench_k8s.loadgen.users import fire_request_event
from fmbench_k8s.loadgen.writer import FLUSH_INTERVAL_S, RecordWriter

log = logging.getLogger("fmbench.loadgen")
PROGRESS_INTERVAL_S = 0.5
# After failing to reach the endpoint at all (plan.UNREACHABLE), a closed-loop slot waits before its
# next request, as a real client reconnecting would: against a dead server it would otherwise spin
# tens of thousands of refused connections per second, drowning the records and this worker's CPU.
UNREACHABLE_BACKOFF_S = 0.5


def quiet_gc() -> None:
    """Collect now and freeze what survives; make later collections rare.

    A full collection with a thousand streams in flight stalls the hub for tens of milliseconds,
    which every stream would see as latency. Objects alive between stages (clients, pools,
    modules) are frozen out of future collections; the thresholds keep young collections small
    and full ones rare while a stage runs (each stage starts with a fresh collect-and-freeze).
    """
    gc.unfreeze()  # what was frozen before may be garbage by now (e.g. the last stage's state)
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 50, 1000)


class StageRun:
    """The state of one stage on this worker."""

    def __init__(self, plan: m.StagePlan, index: int, ctx: StageContext, prompts: PromptSource) -> None:
        self.plan = plan
        self.index = index
        self.ctx = ctx
        self.prompts = prompts
        self.steady_end = plan.steady_end
        self.drain_end = plan.drain_end
        self.inflight: dict[str, RequestState] = {}
        self.greenlets: list[gevent.Greenlet] = []
        self.runners: Runners[RequestState] | None = None
        self.arrivals: Iterator[tuple[int, float]] | None = None
        self.next_arrival: float | None = None  # taken from the schedule, not yet registered
        self.stopping = False
        self.aborted: str | None = None
        self.changed = Event()  # set when aborted or when the master moves the window's end
        self.finished: list[RequestState] = []  # done, not yet accounted (Worker._account)
        self.ready: deque[tuple[Prompt, bytes | None]] = deque()  # made ahead, with their bodies
        self.prompts_ahead = False  # prompts are made ahead (prompts.make_ahead)
        self.seq = 0
        self.result = m.StageResult(plan.stage, ctx.worker, "")
        self.reasons: Counter[str] = Counter()
        self.ttft: list[float] = []
        self.e2e: list[float] = []
        self.tpot: list[float] = []
        self.itl: array[float] = array("d")
        self.lags: list[float] = []

    @property
    def open_loop(self) -> bool:
        return self.plan.arrival != "closed"

    def in_window(self, t_scheduled: float) -> bool:
        return self.plan.steady_start <= t_scheduled < self.steady_end

    def abort(self, reason: str) -> None:
        self.aborted = reason
        self.changed.set()


class Worker:
    def __init__(
        self,
        *,
        runner: Any,
        client: Client,
        writer: RecordWriter,
        exporter: Exporter,
        monitor: Monitor,
        workload: Workload,
        corpus: Corpus | None,
        variant: str,
        worker_id: str,
        max_inflight: int = 4096,
        answer_chars: int | None = None,
    ) -> None:
        self.runner = runner
        self.answer_chars = answer_chars  # spec.evaluation: keep this much of each answer, and its reference
        self.client = client
        self.writer = writer
        self.exporter = exporter
        self.monitor = monitor
        self.workload = workload
        self.corpus = corpus
        # Conversations outlive stages (loadgen/sessions.py)
        self.sessions = Sessions(workload.conversation.turns) if workload.conversation is not None else None
        self.variant = variant
        self.worker_id = worker_id
        self.max_inflight = max_inflight
        self.run: StageRun | None = None
        self._stage_greenlet: gevent.Greenlet | None = None
        self.stopped = False
        dummy = RequestState("warm-up", time.time())
        dummy.succeed(time.time())
        writer.warm_up(to_row(dummy, StageContext(variant, 0, worker_id, 1.0, None, 0.0, 1.0)))
        gevent.spawn(self._flush_loop)

    @property
    def client_id(self) -> str:
        return str(self.runner.client_id)

    # -- messages from the master (run inside Locust's receive greenlet: never block) -----------

    def on_stage(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        plan = m.StagePlan.from_msg(msg.data)
        index = plan.workers.get(self.client_id)
        if index is None:
            log.info("stage %d: not assigned to this worker", plan.stage)
            return
        if self.run is not None and not self.run.stopping:
            log.warning("stage %d announced while stage %d runs; stopping that one", plan.stage, self.run.plan.stage)
            self.run.abort("superseded")
        self._stage_greenlet = gevent.spawn(self._run_stage, plan, index)

    def on_extend(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        run = self.run
        if run is None or run.plan.stage != msg.data["stage"]:
            return
        if time.time() > run.steady_end:
            log.warning("stage %d: extension arrived after the steady window ended", run.plan.stage)
        run.steady_end = float(msg.data["steady_end"])
        run.drain_end = float(msg.data["drain_end"])
        run.ctx = dataclasses.replace(run.ctx, steady_end=run.steady_end)
        run.changed.set()

    def on_abort(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        if self.run is not None:
            self.run.abort(str((msg.data or {}).get("reason", "interrupted")))

    # -- one stage -------------------------------------------------------------------------------

    def _run_stage(self, plan: m.StagePlan, index: int) -> None:
        n = len(plan.workers)
        ctx = StageContext(
            variant=self.variant,
            stage=plan.stage,
            worker=self.worker_id,
            target_concurrency=plan.target if plan.arrival == "closed" else None,
            target_rate=plan.target if plan.arrival != "closed" else None,
            steady_start=plan.steady_start,
            steady_end=plan.steady_end,
            answer_chars=self.answer_chars,
        )
        prompts = PromptSource(self.workload, f"{index}:{plan.stage}", self.corpus)
        run = self.run = StageRun(plan, index, ctx, prompts)
        run.result.client_id = self.client_id
        labels = self.exporter.labels
        self.exporter.stage.labels(**labels).set(plan.stage)
        if run.open_loop:
            self.exporter.target_rate.labels(**labels).set(plan.target)
        else:
            self.exporter.target_concurrency.labels(**labels).set(plan.target)
        # Made ahead only where a prompt depends on nothing but the stream's order (not a
        # conversation's next turn, nor a trace row's arrival number).
        by_arrival = self.corpus is not None and self.corpus.replay is not None
        run.prompts_ahead = run.open_loop and self.sessions is None and not by_arrival
        if run.prompts_ahead:
            make_ahead(run.prompts, self.client.encode, run.ready)
        quiet_gc()  # while idle, so no stream pays for it
        self._sleep_until(plan.t_start, run)
        self.monitor.reset()
        if run.aborted is None:
            if run.open_loop:
                run.runners = Runners(self.max_inflight, lambda st: self._execute(run, st))
                replay = self.corpus.replay if self.corpus is not None else None
                run.arrivals = worker_offsets(plan.arrival, plan.target, plan.seed, index, n, replay=replay)
                run.greenlets.append(gevent.spawn(self._dispatch, run))
            else:
                share = split_concurrency(round(plan.target), n, index)
                run.greenlets += [gevent.spawn(self._slot, run) for _ in range(share)]
        progress = gevent.spawn(self._progress_loop, run)
        while run.aborted is None and (left := run.steady_end - time.time()) > 0:
            run.changed.clear()
            run.changed.wait(left)
        while run.aborted is None and time.time() < run.drain_end and (run.inflight or not self._arrivals_over(run)):
            gevent.sleep(0.01)
            self._account(run)
        self._stop(run, run.aborted or "cut_off_at_drain_end")
        progress.kill()
        self._finish_stage(run)

    def _arrivals_over(self, run: StageRun) -> bool:
        return all(g.dead for g in run.greenlets)

    @staticmethod
    def _sleep_until(t: float, run: StageRun) -> None:
        while run.aborted is None:
            left = t - time.time()
            if left <= 0:
                return
            gevent.sleep(min(left, 0.25))

    def _new_request(self, run: StageRun, t_scheduled: float) -> RequestState:
        run.seq += 1
        st = RequestState(f"{self.worker_id}-{run.plan.stage}-{run.seq}", t_scheduled)
        run.inflight[st.request_id] = st
        return st

    def _slot(self, run: StageRun) -> None:
        while not run.stopping and run.aborted is None:
            now = time.time()
            if now >= run.steady_end:
                return
            st = self._new_request(run, now)
            self._execute(run, st)
            if st.error in UNREACHABLE:
                gevent.sleep(max(0.0, min(UNREACHABLE_BACKOFF_S, run.steady_end - time.time())))

    def _dispatch(self, run: StageRun) -> None:
        assert run.arrivals is not None and run.runners is not None
        t0 = run.plan.t_start
        for arrival, offset in run.arrivals:
            t = t0 + offset
            run.next_arrival = t
            while t >= run.steady_end:  # beyond the window, unless the master extends it meanwhile
                left = run.steady_end - time.time()
                if left <= 0 or run.stopping or run.aborted is not None:
                    return
                gevent.sleep(min(0.05, left))
            delay = t - time.time()
            if delay > 0:
                gevent.sleep(delay)
            if run.stopping or run.aborted is not None:
                return
            st = self._new_request(run, t)
            st.arrival = arrival
            run.next_arrival = None
            run.runners.wait_available()
            if run.stopping:
                return
            run.runners.submit(st)
            if run.prompts_ahead and len(run.ready) <= 1:  # the last one is the request's just handed out
                gevent.sleep(0)  # which goes first
                make_ahead(run.prompts, self.client.encode, run.ready)

    def _execute(self, run: StageRun, st: RequestState) -> None:
        prompt, body = run.ready.popleft() if run.ready else (run.prompts.next(st.arrival), None)
        session = None
        if self.sessions is not None:
            session, prompt = self.sessions.take(prompt)
            st.answer, st.turn = [], prompt.turn
        if self.answer_chars is not None:
            st.answer = [] if st.answer is None else st.answer
            st.reference, st.question = prompt.reference, prompt.text
        st.prompt_tokens, st.bucket = prompt.prompt_tokens, prompt.bucket
        if prompt.images:
            st.images = len(prompt.images)
            st.image_bytes = sum(len(i.data) for i in prompt.images)
            st.image_pixels = sum(i.width * i.height for i in prompt.images)
            st.image_size = prompt.image_size or pixel_class(st.image_pixels // st.images)
        st.client_bound = self.monitor.bound_now
        self.exporter.request_started()
        try:
            self.client.generate(prompt, st, body)
        except Exception as exc:  # a client bug must cost one error row, not the slot
            log.exception("request %s: unexpected client error", st.request_id)
            st.fail(f"client_error_{type(exc).__name__}", time.time())
        finally:
            self.exporter.request_ended()
            if session is not None and self.sessions is not None:
                answered = st.outcome == OUTCOME_OK and st.answer is not None
                self.sessions.give_back(session, prompt, "".join(st.answer or ()) if answered else None)
        run.finished.append(st)

    def _account(self, run: StageRun) -> None:
        """Record the requests that finished since the last call."""
        done, run.finished = run.finished, []
        for st in done:
            self._record(run, st)

    def _record(self, run: StageRun, st: RequestState) -> None:
        """Account for a finished (or cut-off) request: row, metrics, counters, Locust event."""
        if run.inflight.pop(st.request_id, None) is None:
            return  # already recorded (cut off at the stage's end): one row per request
        if st.outcome is None:
            st.cut_off("unknown")
        res = run.result
        row = to_row(st, run.ctx)
        self.writer.add(run.plan.stage, row)
        self.exporter.observe(run.plan.stage, st, run.open_loop)
        in_window = row["in_steady_window"]
        res.scheduled += 1
        if in_window:
            res.window_scheduled += 1
        if st.outcome == OUTCOME_OK:
            res.ok += 1
            if in_window:
                res.window_ok += 1
                run.ttft.append(row["ttft_s"])
                run.e2e.append(row["e2e_s"])
                run.tpot.append(row["tpot_s"] if row["tpot_s"] is not None else float("nan"))
                run.itl.extend(st.itl)
                res.window_output_tokens += st.output_tokens
                res.window_prompt_tokens += row["prompt_tokens"] or 0
        elif st.outcome == OUTCOME_ERROR:
            res.errors += 1
            res.window_errors += int(in_window)
            run.reasons[st.error or "unknown"] += 1
        else:
            res.incomplete += 1
            res.window_incomplete += int(in_window)
        if run.open_loop and st.t_sent is not None:
            run.lags.append(st.t_sent - st.t_scheduled)
        self._fire_locust(run, st)

    def _fire_locust(self, run: StageRun, st: RequestState) -> None:
        name = f"stage {run.plan.stage} @ {run.plan.target:g}"
        fire_request_event(self.runner.environment, self.client.api, name, st)

    def _stop(self, run: StageRun, reason: str) -> None:
        """Stop sending; kill what is in flight and write it as incomplete."""
        run.stopping = True
        stop_time = time.time()
        live = list(run.greenlets)
        if run.runners is not None:
            live += run.runners.greenlets
        try:
            gevent.killall(live, block=True, timeout=10)
        except gevent.Timeout:  # raised here, in the stage: its rows and result must still follow
            log.warning("stage %d: %d request greenlets did not stop within 10 s", run.plan.stage, len(live))
        self._account(run)
        for st in list(run.inflight.values()):
            st.cut_off("not_sent" if st.t_sent is None else reason)
            self._record(run, st)
        # Arrivals the dispatcher never reached (it fell behind, or the stage was aborted) that
        # were due before the window closed: scheduled, so they are rows too.
        horizon = min(run.steady_end, stop_time)
        pending = [run.next_arrival] if run.next_arrival is not None else []
        if run.arrivals is not None and (not pending or pending[0] < horizon):
            for _, offset in run.arrivals:
                t = run.plan.t_start + offset
                if t >= horizon:
                    break
                pending.append(t)
        for t in pending:
            if t < horizon:
                st = self._new_request(run, t)
                st.cut_off("not_sent")
                self._record(run, st)
        run.next_arrival = None

    def _progress_loop(self, run: StageRun) -> None:
        while True:
            gevent.sleep(PROGRESS_INTERVAL_S)
            self._account(run)
            res = run.result
            window_inflight = sum(1 for st in run.inflight.values() if run.in_window(st.t_scheduled))
            self.runner.send_message(m.PROGRESS, {
                "stage": run.plan.stage, "as_of": time.time(), "worker": self.worker_id,
                "window_scheduled": res.window_scheduled + window_inflight, "done": res.scheduled,
                "ok": res.ok, "errors": res.errors, "incomplete": res.incomplete, "inflight": len(run.inflight),
            })  # fmt: skip

    def _finish_stage(self, run: StageRun) -> None:
        stage = run.plan.stage
        self.writer.flush(stage)
        res = run.result
        res.t_end = time.time()
        res.errors_by_reason = dict(run.reasons)
        res.ttft = m.pack(run.ttft)
        res.e2e = m.pack(run.e2e)
        res.tpot = m.pack(run.tpot)
        res.itl = m.pack(run.itl, "<f4")
        res.rows_written = self.writer.written.get(stage, 0)
        res.rows_unwritten = self.writer.pending(stage)
        if run.lags:
            res.schedule_lag_p99_s = float(np.percentile(run.lags, 99))
        check = self.monitor.summary()
        res.selfcheck = check.as_dict()
        notes = []
        if run.aborted:
            notes.append(run.aborted)
        if res.rows_unwritten:
            notes.append(f"{res.rows_unwritten} records could not be written to storage")
        res.note = "; ".join(notes) or None
        self.exporter.stage.labels(**self.exporter.labels).set(-1)
        self.exporter.client_bound.labels(**self.exporter.labels).set(float(check.client_bound))
        log.info(
            "stage %d done: %d requests (%d ok, %d errors, %d incomplete), %d in the steady window",
            stage, res.scheduled, res.ok, res.errors, res.incomplete, res.window_scheduled,
        )  # fmt: skip
        self.runner.send_message(m.RESULT, res.to_msg())
        # The samples are sent; drop them (and the dead greenlets) now rather than at the next
        # stage: a long stage's ITL gaps can be tens of megabytes.
        run.ttft, run.e2e, run.tpot, run.itl, run.lags = [], [], [], array("d"), []
        res.ttft = res.e2e = res.tpot = res.itl = b""
        run.greenlets.clear()
        run.runners = None
        run.arrivals = None

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            labels = self.exporter.labels
            self.exporter.loop_lag.labels(**labels).set(self.monitor.recent_lag)
            self.exporter.cpu.labels(**labels).set(self.monitor.cpu_now)
            if self.stopped:
                return  # shutdown's last flush writes what is left, after the uploads in flight
            if self.writer.pending():
                self.writer.flush()

    def shutdown(self, reason: str = "worker_stopped") -> None:
        """Stop the current stage (its in-flight requests become incomplete), flush everything."""
        if self.stopped:
            return
        self.stopped = True
        run = self.run
        if run is not None and not run.stopping:
            run.abort(reason)
        # Joined even when the stage is already stopping: it is then writing its cut-off requests.
        if self._stage_greenlet is not None:
            self._stage_greenlet.join(timeout=20)
        # The flusher is not killed: an upload cut off mid-way might be stored and then written
        # again. It sees ``stopped`` and ends; the last flush waits for its upload in flight.
        if not self.writer.flush(wait=True):
            log.error("%d records could not be written to storage and are lost", self.writer.pending())
