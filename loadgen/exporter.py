"""Prometheus exporter of one worker (own registry). Metric names are a contract (DESIGN §4):
dashboards and the analysis query them."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

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


class _Histogram:
    """Prometheus' histogram (cumulative ``le`` buckets, sum, count) kept as plain numbers.

    Why not prometheus_client's: its ``observe`` takes a lock per bucket and per sum, and under
    gevent every lock is a Python-level call; a request's six metrics cost ~25 µs that way. Only
    the hub's thread writes; a scrape reads whatever it finds, as prometheus_client's does."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound with value <= bound
        self.total += value

    def samples(self) -> list[tuple[str, float]]:
        les = [*map(floatToGoString, self.bounds), "+Inf"]
        return list(zip(les, accumulate(self.counts), strict=True))


_REQUESTS_HELP = "Requests finished, by outcome (ok, error, incomplete)."
_LAG_HELP = "Open loop: t_sent - t_scheduled (the client was late)."
_STAGE_HISTOGRAMS = {  # RequestState's property: name, help, buckets
    "ttft": ("fmbench_request_ttft_seconds", "Time to first token of ok requests.", LATENCY_BUCKETS),
    "e2e": ("fmbench_request_e2e_seconds", "Send to last token of ok requests.", LATENCY_BUCKETS),
    "tpot": ("fmbench_request_tpot_seconds", "(E2E - TTFT) / (output tokens - 1) of ok requests.", TPOT_BUCKETS),
}


class _StageSeries:
    """One stage's request metrics."""

    __slots__ = ("hists", "output_tokens", "prompt_tokens", "requests")

    def __init__(self) -> None:
        # Every outcome exists from a stage's first request on, at 0 until it happens, so
        # error panels and alerts read 0 for a clean run instead of "no data".
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.hists = {key: _Histogram(buckets) for key, (_, _, buckets) in _STAGE_HISTOGRAMS.items()}
        self.output_tokens = self.prompt_tokens = 0


class _RequestMetrics:
    """The per-request metrics of one worker, collected at scrape time (a prometheus_client
    custom collector): names, help and labels are those the dashboards and analysis query."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.stages: dict[int, _StageSeries] = {}
        self.schedule_lag = _Histogram(LAG_BUCKETS)
        self.inflight = 0

    def collect(self) -> Iterator[Metric]:
        base, names = list(self.labels.values()), list(self.labels)
        staged = [*names, "stage"]
        requests = CounterMetricFamily("fmbench_requests", _REQUESTS_HELP, labels=[*staged, "outcome"])
        hists = {
            key: HistogramMetricFamily(name, doc, labels=staged) for key, (name, doc, _) in _STAGE_HISTOGRAMS.items()
        }
        output = CounterMetricFamily("fmbench_output_tokens", "Output tokens received.", labels=staged)
        prompt = CounterMetricFamily("fmbench_prompt_tokens", "Prompt tokens sent.", labels=staged)
        for stage, series in list(self.stages.items()):
            values = [*base, str(stage)]
            for outcome, n in series.requests.items():
                requests.add_metric([*values, outcome], n)
            for key, family in hists.items():
                hist = series.hists[key]
                family.add_metric(values, hist.samples(), hist.total)
            output.add_metric(values, series.output_tokens)
            prompt.add_metric(values, series.prompt_tokens)
        lag = HistogramMetricFamily("fmbench_schedule_lag_seconds", _LAG_HELP, labels=names)
        lag.add_metric(base, self.schedule_lag.samples(), self.schedule_lag.total)
        inflight = GaugeMetricFamily("fmbench_inflight_requests", "Requests in flight on this worker.", labels=names)
        inflight.add_metric(base, self.inflight)
        yield from (requests, *hists.values(), output, prompt, lag, inflight)


class Exporter:
    """The worker's (and the master's) metrics. Per-request metrics are plain numbers that
    ``observe`` updates and a scrape reads (``_RequestMetrics``); the rest are gauges set a few
    times per stage."""

    def __init__(self, benchmark: str, variant: str) -> None:
        self.labels = {"benchmark": benchmark, "variant": variant}
        r = self.registry = CollectorRegistry(auto_describe=True)
        names = list(self.labels)
        self.request_metrics = _RequestMetrics(self.labels)
        r.register(self.request_metrics)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=r)

        self.target_concurrency = gauge("fmbench_target_concurrency", "Concurrency of the current stage (all workers).")
        self.target_rate = gauge("fmbench_target_rate", "Offered requests/s of the current stage (all workers).")
        self.stage = gauge("fmbench_stage", "Current stage number (-1 between stages).")
        self.loop_lag = gauge("fmbench_event_loop_lag_seconds", "Largest event-loop lag in the last second.")
        self.cpu = gauge("fmbench_client_cpu_percent", "CPU use of this worker process (100 = one core).")
        self.client_bound = gauge("fmbench_client_bound", "1 while the worker itself is the bottleneck.")
        self.stage.labels(**self.labels).set(-1)
        # Exported (as 0) before the first stage, so dashboards find them. The two targets are not:
        # a closed-loop run has no offered rate and an open-loop run no target concurrency.
        for metric in (self.loop_lag, self.cpu, self.client_bound):
            metric.labels(**self.labels)
        self.port: int | None = None
        self._server: Any = None

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

    def request_started(self) -> None:
        """``fmbench_inflight_requests`` counts it until ``request_ended``."""
        self.request_metrics.inflight += 1

    def request_ended(self) -> None:
        self.request_metrics.inflight -= 1

    def observe(self, stage: int, st: RequestState, open_loop: bool) -> None:
        """A request ended (or was cut off): count it, and time it if it is ok."""
        metrics = self.request_metrics
        series = metrics.stages.get(stage)
        if series is None:
            series = metrics.stages[stage] = _StageSeries()
        series.requests[st.outcome or "incomplete"] += 1
        if st.outcome == "ok":
            for key, hist in series.hists.items():  # the keys of _STAGE_HISTOGRAMS
                value = getattr(st, key)
                if value is not None:
                    hist.observe(value)
        series.output_tokens += st.output_tokens
        prompt = st.server_prompt_tokens if st.server_prompt_tokens is not None else st.prompt_tokens
        series.prompt_tokens += prompt or 0
        if open_loop and st.t_sent is not None:
            metrics.schedule_lag.observe(max(0.0, st.t_sent - st.t_scheduled))
