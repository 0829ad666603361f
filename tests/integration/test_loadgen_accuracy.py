"""What the load generator measures equals the simulator's timing model, for every HTTP API.

A real master and two worker processes run one closed-loop stage against the simulator (jitter
0). The simulator's model gives every request's exact TTFT (prefill_base + prompt tokens x
per-token) and ITL (decode_base, with batch_slowdown 0), so the records can be checked request by
request. Events 4 ms apart also catch the batching regression: a client that reads fixed blocks
stamps several events with one time (zero gaps, inflated TTFT).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fmbench_k8s.contract.records import itl_gaps
from tests.integration.test_loadgen_support import Sim, assert_accounting, loadgen, start_simulator, write_spec

# Milliseconds are measured here: `make test` runs this module by itself, after the parallel tiers.
pytestmark = [pytest.mark.integration, pytest.mark.alone]

PREFILL_BASE, PER_TOKEN, DECODE = 0.015, 0.0001, 0.004
OUTPUT_TOKENS = 16
CONCURRENCY = 4


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = start_simulator("--max-num-seqs", "64", "--prefill-base-s", str(PREFILL_BASE), "--prefill-s-per-token",
                        str(PER_TOKEN), "--decode-base-s", str(DECODE), "--batch-slowdown", "0")  # fmt: skip
    yield s
    s.stop()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


@pytest.mark.parametrize(("api", "path"), [("openai-chat", "/v1"), ("openai-completions", "/v1"), ("tgi", ""),
                                           ("triton", "")])  # fmt: skip
def test_measurements_match_the_simulator_model(sim: Sim, tmp_path: Path, api: str, path: str) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        variants=[{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
        workload={
            "requestsPerMinute": 600,
            "promptTokens": {"mean": 100, "stddev": 20, "min": 50, "max": 150},
            "outputTokens": {"mean": OUTPUT_TOKENS},
        },
        load={"mode": "fixed", "concurrency": {"levels": [CONCURRENCY]}, "stageDuration": "2s"},
    )
    with loadgen(tmp_path, spec, "sim", endpoint_url=sim.url + path, api=api) as run:
        run.start()
        scraped: dict[str, float] = {}
        if api == "openai-chat":
            w0 = run.workers[0]
            line = run.wait_for(lambda: next((ln for ln in w0.lines if "metrics listening" in ln), None), 30,
                                "the worker's metrics port")  # fmt: skip
            port = int(re.findall(r":(\d+)$", line)[0])
            run.wait_event("stage_start", 30)

            def requests_seen() -> dict[str, float] | None:
                got = _scrape(port)
                return got if got.get("fmbench_requests_total", 0) >= 5 else None

            scraped = run.wait_for(requests_seen, 30, "requests in the worker's Prometheus metrics")
        assert run.wait() == 0, run.master.stderr if run.master else ""
        df = assert_accounting(run)

    assert (df["outcome"] == "ok").all(), df["error"].value_counts()
    assert set(df["worker"]) == {"w0", "w1"}
    assert (df["output_tokens"] == OUTPUT_TOKENS).all()
    assert set(df["token_source"]) == {"client" if api == "triton" else "server"}
    if api != "triton":  # the simulator reports the prompt tokens it counted: the words we sent
        assert df["prompt_tokens"].between(50, 150).all()
    win = df[df["in_steady_window"]]
    prompt = win["prompt_tokens"].to_numpy(dtype=float) if api != "triton" else np.full(len(win), np.nan)
    if api != "triton":
        ttft_err = win["ttft_s"].to_numpy() - (PREFILL_BASE + PER_TOKEN * prompt)
        assert -0.0005 < float(np.median(ttft_err)) < 0.003, f"TTFT median error {np.median(ttft_err) * 1000:.2f} ms"
        e2e_err = win["e2e_s"].to_numpy() - (PREFILL_BASE + PER_TOKEN * prompt + (OUTPUT_TOKENS - 1) * DECODE)
        assert -0.001 < float(np.median(e2e_err)) < 0.004, f"E2E median error {np.median(e2e_err) * 1000:.2f} ms"
    else:
        assert PREFILL_BASE + 0.005 < float(win["ttft_s"].median()) < PREFILL_BASE + 0.015 + 0.003
    per_request = [itl_gaps(b) for b in win["itl_s"]]
    gaps = np.concatenate(per_request)
    assert len(gaps) == len(win) * (OUTPUT_TOKENS - 1)
    assert abs(float(np.median(gaps)) - DECODE) < 0.0005, f"ITL median {np.median(gaps) * 1000:.2f} ms"
    # Each event is stamped when it arrives: no clumps of events sharing a timestamp (reading
    # 1 KiB blocks puts ~6 of these ~150-byte events under one stamp). A stalled host makes the
    # simulator catch up with back-to-back tokens, so streams with a stall are judged apart.
    # A late event followed by an early one is the server catching up, not the client clumping.
    clean = [g for g in per_request if g.max() < 2.5 * DECODE]
    assert len(clean) >= len(per_request) / 2, "most streams had a gap > 10 ms: a stalled host, or clumped events"
    clumped = [(g[1:] < 0.001) & (g[:-1] < 1.5 * DECODE) for g in clean]
    together = float(np.mean(np.concatenate(clumped)))
    assert together < 0.02, f"{together:.1%} of events arrived 'together'"
    assert float(np.mean(np.concatenate(clean) < 0.001)) < 0.10  # (a stalled server's catch-up aside)
    assert abs(float(win["tpot_s"].median()) - DECODE) < 0.0005
    stage = run.stages()[0]
    measured_rate = len(win) / (stage["steady_end"] - stage["steady_start"])
    # Little's law: the closed loop keeps its users busy, so the rate is the users over the time
    # each spends per request (due to done). A host busy with other work slows the simulator, so
    # the model's rate is a ceiling, not a value to meet.
    cycle = float((win["t_end"] - win["t_scheduled"]).mean())
    assert measured_rate == pytest.approx(CONCURRENCY / cycle, rel=0.1)
    model_rate = CONCURRENCY / (PREFILL_BASE + PER_TOKEN * 100 + (OUTPUT_TOKENS - 1) * DECODE)
    assert measured_rate < model_rate * 1.15
    if scraped:
        for name in (
            "fmbench_requests_total",
            "fmbench_request_ttft_seconds_count",
            "fmbench_request_e2e_seconds_count",
            "fmbench_request_tpot_seconds_count",
            "fmbench_output_tokens_total",
            "fmbench_prompt_tokens_total",
            "fmbench_inflight_requests",
            "fmbench_target_concurrency",
            "fmbench_schedule_lag_seconds_count",
        ):
            assert name in scraped, name
        assert scraped["fmbench_target_concurrency"] == CONCURRENCY


REASONING = 6


def test_ttfo_is_the_first_answer_token_after_the_reasoning(tmp_path: Path) -> None:
    """A reasoning model thinks before it answers: TTFT is its first token (a thought), TTFO its
    first answer token, REASONING decode steps later; usage says how many tokens were reasoning."""
    s = start_simulator("--max-num-seqs", "64", "--prefill-base-s", str(PREFILL_BASE), "--decode-base-s", str(DECODE),
                        "--batch-slowdown", "0", "--reasoning-tokens", str(REASONING))  # fmt: skip
    try:
        spec = write_spec(
            tmp_path / "spec.yaml",
            variants=[{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
            workload={"requestsPerMinute": 600, "promptTokens": {"mean": 50}, "outputTokens": {"mean": OUTPUT_TOKENS}},
            load={"mode": "fixed", "concurrency": {"levels": [2]}, "stageDuration": "2s"},
        )
        with loadgen(tmp_path, spec, "sim", endpoint_url=s.url + "/v1", api="openai-chat") as run:
            run.start()
            assert run.wait() == 0, run.master.stderr if run.master else ""
            df = assert_accounting(run)
    finally:
        s.stop()
    ok = df[df["outcome"] == "ok"]
    assert len(ok) > 0 and (ok["reasoning_tokens"] == REASONING).all()
    assert (ok["output_tokens"] == OUTPUT_TOKENS).all()  # reasoning tokens are output tokens
    ttfo = ok["t_first_answer"] - ok["t_sent"]
    gap = float((ttfo - ok["ttft_s"]).median())
    assert abs(gap - REASONING * DECODE) < 0.003, (
        f"TTFO - TTFT {gap * 1000:.1f} ms, expected {REASONING * DECODE * 1000:.0f}"
    )
