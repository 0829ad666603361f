"""Prometheus exporter of one worker (own registry). Metric names are a contract (DESIGN §4):
dashboards and the analysis query them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fmbench_k8s.contract.records import OUTCOMES
from fmbench_k8s.loadgen.request import RequestState


def _ladder(lo_exp: int, hi: float) -> tuple[float, ...]:
    """1-1.5-2-3-5-7.5 per decade from 10**lo_exp to ``hi`` (about 15% resolution)."""
    out: list[float] = []
    exp = lo_exp
    while True:
        for m in (1.0, 1.5, 2.0, 3.0, 5.0, 7.5):
            v = round(m * 10.0**exp, 6)
            if v > hi:
                return (*out, hi) if out[-1] < hi else tuple(out)
            out.append(v)
        exp += 1


LATENCY_BUCKETS = _ladder(-3, 60.0)[3:]  # 5 ms .. 60 s
TPOT_BUCKETS = _ladder(-4, 5.0)  # 0.1 ms .. 5 s: per-token times are small
LAG_BUCKETS = _ladder(-4, 60.0)


@dataclass(frozen=True, slots=True)
class _StageSeries:
    """One stage's labelled children of the request metrics."""

    requests: dict[str, Any]  # by outcome
    ttft: Any
    e2e: Any
    tpot: Any
    output_tokens: Any
    prompt_tokens: Any


class Exporter:
    def __init__(self, benchmark: str, variant: str) -> None:
        self.labels = {"benchmark": benchmark, "variant": variant}
        r = self.registry = CollectorRegistry(auto_describe=True)
        stage_labels = ["benchmark", "variant", "stage"]
        self.requests = Counter("fmbench_requests", "Requests finished, by outcome (ok, error, incomplete).",
                                [*stage_labels, "outcome"], registry=r)  # fmt: skip
        self.ttft = Histogram("fmbench_request_ttft_seconds", "Time to first token of ok requests.", stage_labels,
                              buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.e2e = Histogram("fmbench_request_e2e_seconds", "Send to last token of ok requests.", stage_labels,
                             buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.tpot = Histogram("fmbench_request_tpot_seconds", "(E2E - TTFT) / (output tokens - 1) of ok requests.",
                              stage_labels, buckets=TPOT_BUCKETS, registry=r)  # fmt: skip
        self.output_tokens = Counter("fmbench_output_tokens", "Output tokens received.", stage_labels, registry=r)
        self.prompt_tokens = Counter("fmbench_prompt_tokens", "Prompt tokens sent.", stage_labels, registry=r)
        self.inflight = Gauge("fmbench_inflight_requests", "Requests in flight on this worker.",
                              ["benchmark", "variant"], registry=r)  # fmt: skip
        self.target_concurrency = Gauge("fmbench_target_concurrency", "Concurrency of the current stage (all workers).",
                                        ["benchmark", "variant"], registry=r)  # fmt: skip
        self.target_rate = Gauge("fmbench_target_rate", "Offered requests/s of the current stage (all workers).",
                                 ["benchmark", "variant"], registry=r)  # fmt: skip
        self.stage = Gauge("fmbench_stage", "Current stage number (-1 between stages).", ["benchmark", "variant"],
                           registry=r)  # fmt: skip
        self.schedule_lag = Histogram("fmbench_schedule_lag_seconds",
                                      "Open loop: t_sent - t_scheduled (the client was late).",
                                      ["benchmark", "variant"], buckets=LAG_BUCKETS, registry=r)  # fmt: skip
        self.loop_lag = Gauge("fmbench_event_loop_lag_seconds", "Largest event-loop lag in the last second.",
                              ["benchmark", "variant"], registry=r)  # fmt: skip
        self.cpu = Gauge("fmbench_client_cpu_percent", "CPU use of this worker process (100 = one core).",
                         ["benchmark", "variant"], registry=r)  # fmt: skip
        self.client_bound = Gauge("fmbench_client_bound", "1 while the worker itself is the bottleneck.",
                                  ["benchmark", "variant"], registry=r)  # fmt: skip
        self.stage.labels(**self.labels).set(-1)
        # Exported (as 0) before the first stage, so dashboards find them. The two targets are not:
        # a closed-loop run has no offered rate and an open-loop run no target concurrency.
        for metric in (self.inflight, self.schedule_lag, self.loop_lag, self.cpu, self.client_bound):
            metric.labels(**self.labels)
        self.port: int | None = None
        self._server: Any = None
        self._stages: dict[int, _StageSeries] = {}

    def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics; ``port`` 0 picks a free one. Returns the bound port."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _stage(self, stage: int) -> _StageSeries:
        """The stage's labelled series, made once: ``labels()`` per request was most of ``observe``."""
        series = self._stages.get(stage)
        if series is None:
            labels = {**self.labels, "stage": str(stage)}
            # Every outcome exists from a stage's first request on, at 0 until it happens, so
            # error panels and alerts read 0 for a clean run instead of "no data".
            series = self._stages[stage] = _StageSeries(
                requests={o: self.requests.labels(**labels, outcome=o) for o in OUTCOMES},
                ttft=self.ttft.labels(**labels), e2e=self.e2e.labels(**labels), tpot=self.tpot.labels(**labels),
                output_tokens=self.output_tokens.labels(**labels), prompt_tokens=self.prompt_tokens.labels(**labels),
            )  # fmt: skip
        return series

    def observe(self, stage: int, st: RequestState, open_loop: bool) -> None:
        series = self._stage(stage)
        series.requests[st.outcome or "incomplete"].inc()
        if st.outcome == "ok":
            if st.ttft is not None:
                series.ttft.observe(st.ttft)
            if st.e2e is not None:
                series.e2e.observe(st.e2e)
            if st.tpot is not None:
                series.tpot.observe(st.tpot)
        if st.output_tokens:
            series.output_tokens.inc(st.output_tokens)
        prompt = st.server_prompt_tokens if st.server_prompt_tokens is not None else st.prompt_tokens
        if prompt:
            series.prompt_tokens.inc(prompt)
        if open_loop and st.t_sent is not None:
            self.schedule_lag.labels(**self.labels).observe(max(0.0, st.t_sent - st.t_scheduled))
