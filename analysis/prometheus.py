"""Server-side metrics from Prometheus over each stage's steady window.

Best effort by design: a missing series is reported as absent and an unreachable Prometheus as
"server metrics not collected: <reason>"; neither ever fails the analysis, because the per-request
records alone answer the sizing question.

Series are selected per variant with label matchers (``DEFAULT_SELECTORS``); the operator's
PodMonitor must attach ``benchmark`` and ``variant`` labels to the model server's series, and the
load workers label their histograms ``benchmark``, ``variant``, ``stage`` (DESIGN §4).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from fmbench_k8s.contract.records import StageInfo

Family = Literal["server", "dcgm", "neuron", "client"]

# Label matchers per metric family; {benchmark}, {variant}, {stage} are filled in (escaped).
DEFAULT_SELECTORS: Final[Mapping[Family, str]] = {
    "server": 'benchmark="{benchmark}",variant="{variant}"',
    # DCGM and neuron-monitor exporters label series with the pod using the device.
    "dcgm": 'pod=~"{benchmark}-{variant}-.*"',
    "neuron": 'pod=~"{benchmark}-{variant}-.*"',
    "client": 'benchmark="{benchmark}",variant="{variant}",stage="{stage}"',
}


@dataclass(frozen=True)
class Gauge:
    """A gauge summarised over the window as avg and max."""

    key: str
    family: Family
    names: tuple[str, ...]  # alternatives, first present wins (vLLM renamed its KV-cache gauge)
    total: bool  # True: sum across series first (request counts); False: every series' samples


@dataclass(frozen=True)
class Quantile:
    """histogram_quantile of a client histogram's increase over the window."""

    key: str
    histogram: str
    q: float


# Each quantity under one key whatever the engine: a variant's server exports one engine's names,
# so the first name present is the one read (and the report says which). vLLM 0.32's names are
# verified against the real engine, SGLang 0.5.23's against its own metrics collector's source
# (tests/engines/); the simulator exports vLLM's. TGI 3.3.4's are taken from its metrics reference
# and not checked against a running TGI (docs/metrics.md, "Server metrics"); TGI has no TTFT or
# KV-cache series, its token counts are histograms (the `_sum` is the total) and its ITL is the
# per-request mean time per token.
GAUGES: Final = (
    Gauge(
        "running",
        "server",
        ("vllm:num_requests_running", "sglang:num_running_reqs", "tgi_batch_current_size"),
        total=True,
    ),
    Gauge("waiting", "server", ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "tgi_queue_size"), total=True),
    # vLLM >= 0.10 names it kv_cache_usage_perc, earlier versions gpu_cache_usage_perc.
    Gauge(
        "kvCacheUsage",
        "server",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
        total=False,
    ),
    # SGLang's own hit rate; vLLM's is the ratio of two counters (RATIOS below)
    Gauge("prefixCacheHitRate", "server", ("sglang:cache_hit_rate",), total=False),
    Gauge("gpuUtilization", "dcgm", ("DCGM_FI_DEV_GPU_UTIL",), total=False),
    Gauge("neuronCoreUtilization", "neuron", ("neuroncore_utilization_ratio",), total=False),
)
QUANTILES: Final = (Quantile("clientE2eP95", "fmbench_request_e2e_seconds", 0.95),)


@dataclass(frozen=True)
class Increase:
    """A server counter's or histogram's growth over the window: the total (``_total``) or the
    mean of the observations (``_sum`` / ``_count``), summed over the variant's replicas."""

    key: str
    names: tuple[str, ...]  # as Gauge.names
    mean: bool


INCREASES: Final = (
    Increase(
        "promptTokens",
        ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "tgi_request_input_length_sum"),
        mean=False,
    ),
    Increase(
        "generationTokens",
        ("vllm:generation_tokens_total", "sglang:generation_tokens_total", "tgi_request_generated_tokens_sum"),
        mean=False,
    ),
    Increase("preemptions", ("vllm:num_preemptions_total", "sglang:num_retracted_requests_total"), mean=False),
    Increase(
        "queueTimeMean",
        ("vllm:request_queue_time_seconds", "sglang:queue_time_seconds", "tgi_request_queue_duration"),
        mean=True,
    ),
    Increase("ttftMean", ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"), mean=True),
    Increase(
        "e2eMean",
        ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds", "tgi_request_duration"),
        mean=True,
    ),
    Increase(
        "itlMean",
        (
            "vllm:inter_token_latency_seconds",
            "sglang:inter_token_latency_seconds",
            "tgi_request_mean_time_per_token_duration",
        ),
        mean=True,
    ),
)


def _spellings(names: Sequence[str]) -> list[str]:
    """Each name, then its underscore-escaped form: prometheus_client >= 0.22 answers an
    OpenMetrics scrape (what Prometheus 2.x asks for) with ``vllm_num_requests_running`` for
    ``vllm:num_requests_running`` (``escaping=underscores``)."""
    out = list(names)
    out += [n.replace(":", "_") for n in names if ":" in n]
    return out


@dataclass(frozen=True)
class Ratio:
    """A quantity an engine exports as two counters: the increase of ``numerator`` over the window
    divided by that of ``denominator``. Read when no gauge of the same key was found."""

    key: str
    numerator: str
    denominator: str

    @property
    def series(self) -> tuple[str, ...]:
        """The names the report gives it: the counters as the scrape spelled them (_spellings)."""
        return tuple(
            f"{n} / {d}" for n, d in zip(_spellings([self.numerator]), _spellings([self.denominator]), strict=True)
        )


# vLLM counts prompt tokens looked up in and found in its prefix cache.
RATIOS: Final = (Ratio("prefixCacheHitRate", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),)
HIT_RATE_SERIES: Final = RATIOS[0].series
SERVER_NAMES: Final = tuple(n for r in RATIOS for n in (r.numerator, r.denominator)) + tuple(
    n for m in (*GAUGES, *INCREASES) for n in m.names if n.startswith(("vllm:", "sglang:", "tgi_"))
)


class PrometheusError(Exception):
    """Prometheus could not be asked (connection, HTTP or API error)."""


class PrometheusClient:
    """The two endpoints of the HTTP API we need, synchronous and dependency-free."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        full = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(full, timeout=self.timeout_s) as resp:  # the URL comes from the spec
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400/422 carry the API's own error message
            try:
                detail = json.loads(err.read()).get("error", err.reason)
            except (ValueError, OSError):
                detail = err.reason
            raise PrometheusError(f"HTTP {err.code} from {self.url}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise PrometheusError(f"cannot reach {self.url}: {reason}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})["result"]
        return result

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        result: list[dict[str, Any]] = self._get("/api/v1/query_range", params)["result"]
        return result

    def check(self) -> None:
        self.query("1", 0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def selector(family: Family, selectors: Mapping[Family, str], *, benchmark: str, info: StageInfo) -> str:
    template = selectors.get(family, DEFAULT_SELECTORS[family])
    return "{" + template.format(benchmark=_escape(benchmark), variant=_escape(info.variant), stage=info.stage) + "}"


def _numbers(series: Sequence[Mapping[str, Any]]) -> list[float]:
    out = []
    for s in series:
        for _, raw in s.get("values", [s["value"]] if "value" in s else []):
            v = float(raw)
            if math.isfinite(v):
                out.append(v)
    return out


def _stage_metrics(
    client: PrometheusClient, info: StageInfo, benchmark: str, selectors: Mapping[Family, str]
) -> dict[str, Any]:
    start, end = info.steady_start, info.steady_end
    window = max(1, math.ceil(end - start))
    step = max(1.0, (end - start) / 200)  # at most ~200 points per series
    # Evaluation points are start + k·step; align them on the window's end so the last one is the
    # end itself (else up to one step of the window's tail goes unseen).
    first = end - math.floor((end - start) / step) * step
    metrics: dict[str, dict[str, float | str]] = {}
    absent: list[str] = []
    for gauge in GAUGES:
        sel = selector(gauge.family, selectors, benchmark=benchmark, info=info)
        values: list[float] = []
        for name in _spellings(gauge.names):
            promql = f"sum({name}{sel})" if gauge.total else f"{name}{sel}"
            values = _numbers(client.query_range(promql, first, end, step))
            if values:
                metrics[gauge.key] = {"avg": sum(values) / len(values), "max": max(values), "series": name}
                break
        else:
            absent.append(gauge.key)
    sel = selector("server", selectors, benchmark=benchmark, info=info)
    for inc in INCREASES:
        found = _increase(client, inc, sel, window, end)
        if found is None:
            absent.append(inc.key)
        else:
            metrics[inc.key] = {"value": found[0], "series": found[1]}
    for ratio in RATIOS:
        found = _ratio(client, ratio, sel, window, end) if ratio.key in absent else None
        if found is not None:
            metrics[ratio.key] = {"value": found[0], "series": found[1]}
            absent.remove(ratio.key)
    for qt in QUANTILES:
        sel = selector("client", selectors, benchmark=benchmark, info=info)
        bucket = f"{qt.histogram}_bucket{sel}"
        promql = f"histogram_quantile({qt.q:g}, sum by (le) (increase({bucket}[{window}s])))"
        values = _numbers(client.query(promql, end))
        if values:
            metrics[qt.key] = {"value": values[0], "series": qt.histogram}
        else:
            absent.append(qt.key)
    return {
        "variant": info.variant,
        "stage": info.stage,
        "windowStart": start,
        "windowEnd": end,
        "metrics": metrics,
        "absent": absent,
    }


def _increase(client: PrometheusClient, inc: Increase, sel: str, window: int, at: float) -> tuple[float, str] | None:
    """The window's increase (or mean) and the series it was read from."""
    for name in _spellings(inc.names):
        if inc.mean:
            total = _numbers(client.query(f"sum(increase({name}_sum{sel}[{window}s]))", at))
            count = _numbers(client.query(f"sum(increase({name}_count{sel}[{window}s]))", at))
            if total and count and count[0] > 0:
                return total[0] / count[0], name
        else:
            values = _numbers(client.query(f"sum(increase({name}{sel}[{window}s]))", at))
            if values:
                return values[0], name
    return None


def _ratio(client: PrometheusClient, ratio: Ratio, sel: str, window: int, at: float) -> tuple[float, str] | None:
    """The ratio of the two counters' increases over the window, and the series it was read from."""
    pairs = zip(_spellings([ratio.numerator]), _spellings([ratio.denominator]), strict=True)
    for (num, den), series in zip(pairs, ratio.series, strict=True):
        top = _numbers(client.query(f"sum(increase({num}{sel}[{window}s]))", at))
        bottom = _numbers(client.query(f"sum(increase({den}{sel}[{window}s]))", at))
        if top and bottom and bottom[0] > 0:
            return top[0] / bottom[0], series
    return None


def not_collected(reason: str, url: str | None = None) -> dict[str, Any]:
    return {"collected": False, "url": url, "reason": f"server metrics not collected: {reason}", "stages": []}


def collect_server_metrics(
    url: str | None,
    stages: Sequence[StageInfo],
    *,
    benchmark: str,
    selectors: Mapping[Family, str] = DEFAULT_SELECTORS,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """The report's ``serverMetrics`` section; never raises for Prometheus trouble."""
    if not url:
        return not_collected("no Prometheus URL given (spec.prometheus.url or analyze --prometheus-url)")
    client = PrometheusClient(url, timeout_s)
    try:
        client.check()
        per_stage = [_stage_metrics(client, info, benchmark, selectors) for info in stages]
    except PrometheusError as err:
        return not_collected(str(err), url)
    return {"collected": True, "url": url, "reason": None, "stages": per_stage}
