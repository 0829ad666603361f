"""The worker's per-request metrics, kept as plain numbers, expose what prometheus_client's own
Counter and Histogram expose for the same requests (names, labels, buckets, sums, counts)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fmbench_k8s.contract.records import OUTCOMES
from fmbench_k8s.loadgen.exporter import LAG_BUCKETS, LATENCY_BUCKETS, TPOT_BUCKETS, Exporter
from fmbench_k8s.loadgen.request import RequestState

LABELS = {"benchmark": "b", "variant": "v"}


def _requests(n: int, seed: int) -> list[tuple[int, RequestState]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = 1000.0 + i
        st = RequestState(f"r{i}", t, prompt_tokens=rng.choice([None, rng.randint(1, 500)]))
        st.t_sent = t + rng.choice([0.0, rng.expovariate(1000.0), 0.05])  # on time, late, a bucket's bound
        kind = rng.random()
        if kind < 0.7:
            # some values exactly on a bucket bound: Prometheus' buckets are "<= le"
            ttft = rng.choice([rng.expovariate(5.0), 0.05, 1.0])
            gaps = [rng.choice([rng.expovariate(50.0), 0.001]) for _ in range(rng.randint(0, 20))]
            stamps = [st.t_sent + ttft]
            for g in gaps:
                stamps.append(stamps[-1] + g)
            st.answer_tokens(stamps)
            if rng.random() < 0.5:
                st.server_output_tokens = len(stamps) + rng.randint(0, 3)
                st.server_prompt_tokens = rng.randint(1, 500)
            st.succeed(stamps[-1])
        elif kind < 0.9:
            st.fail("http_500", st.t_sent + 0.01)
        else:
            st.cut_off("cut_off_at_drain_end")
        out.append((rng.choice([0, 1, 2]), st))
    return out


def _reference(requests: list[tuple[int, RequestState]], open_loop: bool, inflight: int) -> bytes:
    """The same metrics through prometheus_client's own classes."""
    r = CollectorRegistry()
    staged = [*LABELS, "stage"]
    counts = Counter("fmbench_requests", "Requests finished, by outcome (ok, error, incomplete).",
                     [*staged, "outcome"], registry=r)  # fmt: skip
    hists = {
        "ttft": Histogram("fmbench_request_ttft_seconds", "Time to first token of ok requests.", staged,
                          buckets=LATENCY_BUCKETS, registry=r),
        "e2e": Histogram("fmbench_request_e2e_seconds", "Send to last token of ok requests.", staged,
                         buckets=LATENCY_BUCKETS, registry=r),
        "tpot": Histogram("fmbench_request_tpot_seconds", "(E2E - TTFT) / (output tokens - 1) of ok requests.",
                          staged, buckets=TPOT_BUCKETS, registry=r),
    }  # fmt: skip
    output = Counter("fmbench_output_tokens", "Output tokens received.", staged, registry=r)
    prompt = Counter("fmbench_prompt_tokens", "Prompt tokens sent.", staged, registry=r)
    lag = Histogram("fmbench_schedule_lag_seconds", "Open loop: t_sent - t_scheduled (the client was late).",
                    list(LABELS), buckets=LAG_BUCKETS, registry=r)  # fmt: skip
    Gauge("fmbench_inflight_requests", "Requests in flight on this worker.", list(LABELS), registry=r).labels(
        **LABELS
    ).set(inflight)
    lag.labels(**LABELS)
    for stage, st in requests:
        labels = {**LABELS, "stage": str(stage)}
        for o in OUTCOMES:
            counts.labels(**labels, outcome=o)
        for h in hists.values():
            h.labels(**labels)
        counts.labels(**labels, outcome=st.outcome).inc()
        if st.outcome == "ok":
            for key, value in (("ttft", st.ttft), ("e2e", st.e2e), ("tpot", st.tpot)):
                if value is not None:
                    hists[key].labels(**labels).observe(value)
        output.labels(**labels).inc(st.output_tokens)
        p = st.server_prompt_tokens if st.server_prompt_tokens is not None else st.prompt_tokens
        prompt.labels(**labels).inc(p or 0)
        if open_loop and st.t_sent is not None:
            lag.labels(**LABELS).observe(max(0.0, st.t_sent - st.t_scheduled))
    return generate_latest(r)


def _families(text: bytes) -> dict[str, list[str]]:
    """Exposition lines by family, in a stable order, without prometheus_client's ``_created``."""
    lines = [ln for ln in text.decode().splitlines() if "_created" not in ln]
    out: dict[str, list[str]] = {}
    name = ""
    for ln in lines:
        if ln.startswith("# HELP "):
            name = ln.split()[2]
        out.setdefault(name, []).append(ln)
    return {k: sorted(v) for k, v in out.items()}


def test_exposition_matches_prometheus_clients_own_metrics() -> None:
    for open_loop in (True, False):
        requests = _requests(400, seed=7 + open_loop)
        exporter = Exporter(LABELS["benchmark"], LABELS["variant"])
        for _ in range(5):
            exporter.request_started()
        exporter.request_ended()
        for stage, st in requests:
            exporter.observe(stage, st, open_loop)
        ours = _families(generate_latest(exporter.registry))
        reference = _families(_reference(requests, open_loop, inflight=4))
        for name, lines in reference.items():
            assert ours.get(name) == lines, name
        assert any('outcome="incomplete"' in ln for ln in ours["fmbench_requests_total"])
        assert any(ln.startswith("fmbench_request_ttft_seconds_bucket") for ln in ours["fmbench_request_ttft_seconds"])


def test_before_any_request_the_worker_exports_its_health_and_no_stage() -> None:
    text = generate_latest(Exporter("b", "v").registry).decode()
    samples = {ln.split("{")[0] for ln in text.splitlines() if not ln.startswith("#")}
    assert {"fmbench_inflight_requests", "fmbench_schedule_lag_seconds_count", "fmbench_stage"} <= samples
    assert {"fmbench_client_bound", "fmbench_event_loop_lag_seconds", "fmbench_client_cpu_percent"} <= samples
    assert not any(s.startswith("fmbench_requests") for s in samples)  # no stage ran: no stage series
