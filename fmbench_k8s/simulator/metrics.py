"""Prometheus metrics under vLLM's names, so scrapers written for vLLM work.

Each app gets its own CollectorRegistry: several simulators in one process
(tests, in-process runners) must not share or collide on global metrics.
Gauges are computed at scrape time and histograms/counters are updated once
per request, so nothing prometheus-related runs per token on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fmbench_k8s.simulator.engine import RequestTiming

CONTENT_TYPE = CONTENT_TYPE_LATEST

# vLLM's bucket boundaries, so histogram_quantile() results are comparable.
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

_LABEL = ["model_name"]


class SimMetrics:
    """The vLLM metric family subset the benchmark reads."""

    def __init__(
        self,
        model: str,
        max_num_seqs: int,
        running: Callable[[], int],
        waiting: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry

        def gauge(name: str, doc: str, fn: Callable[[], float]) -> None:
            Gauge(name, doc, _LABEL, registry=reg).labels(model).set_function(fn)

        gauge("vllm:num_requests_running", "Requests holding a slot.", running)
        gauge("vllm:num_requests_waiting", "Requests queued for a slot.", waiting)
        gauge(
            "vllm:kv_cache_usage_perc",
            "Simulated KV-cache usage: running / max_num_seqs (1 = full).",
            lambda: running() / max_num_seqs,
        )

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, _LABEL, registry=reg, buckets=buckets).labels(model)

        self._ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token, including queue wait.", _TTFT_BUCKETS
        )
        self._e2e = histogram("vllm:e2e_request_latency_seconds", "Arrival to last token.", _E2E_BUCKETS)
        self._itl = histogram(
            "vllm:inter_token_latency_seconds", "Gap between consecutive output tokens (one per gap).", _TPOT_BUCKETS
        )
        self._tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Per request: (last token - first token) / (output tokens - 1).",
            _TPOT_BUCKETS,
        )
        self._queue = histogram("vllm:request_queue_time_seconds", "Arrival to admission into a slot.", _TTFT_BUCKETS)
        self._gen = Counter("vllm:generation_tokens", "Generated tokens.", _LABEL, registry=reg).labels(model)
        self._prompt = Counter("vllm:prompt_tokens", "Prefilled prompt tokens.", _LABEL, registry=reg).labels(model)
        self._prefix_queries = Counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", _LABEL, registry=reg
        ).labels(model)
        self._prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", _LABEL, registry=reg
        ).labels(model)
        self._success = Counter(
            "vllm:request_success",
            "Requests that produced all their tokens.",
            ["model_name", "finished_reason"],
            registry=reg,
        ).labels(model, "length")

    def prefix_cache(self, queried: int, hit: int) -> None:
        """One prompt's lookup in the prefix cache, in tokens (vLLM counts the same way)."""
        self._prefix_queries.inc(queried)
        self._prefix_hits.inc(hit)

    def record(self, timing: RequestTiming, prompt_tokens: int, completed: bool) -> None:
        """Account one request, complete or cut short by a disconnect."""
        times = timing.token_times_s
        if not times:
            return
        # A request that emitted a token has been prefilled.
        self._prompt.inc(prompt_tokens)
        self._gen.inc(len(times))
        self._ttft.observe(times[0] - timing.arrival_s)
        if timing.admitted_s is not None:
            self._queue.observe(timing.admitted_s - timing.arrival_s)
        observe = self._itl.observe
        prev = times[0]
        for t in times[1:]:
            observe(t - prev)
            prev = t
        if len(times) > 1:
            self._tpot.observe((times[-1] - times[0]) / (len(times) - 1))
        if completed:
            self._e2e.observe(times[-1] - timing.arrival_s)
            self._success.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
