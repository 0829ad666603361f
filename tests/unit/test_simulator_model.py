"""Unit tests of the simulator's timing model, profiles, parsing and scheduler."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from random import Random

import pytest

from fmbench_k8s.api.spec import SIMULATED_INSTANCE_TYPES
from fmbench_k8s.loadgen.images import synthetic_png
from fmbench_k8s.simulator import cli, protocol
from fmbench_k8s.simulator.engine import Engine, FaultInjector, RequestTiming
from fmbench_k8s.simulator.params import DEFAULT_MAX_TOKENS, SimParams, estimate
from fmbench_k8s.simulator.profiles import (
    DEFAULT_INSTANCE_TYPE,
    PROFILES,
    UnknownInstanceTypeError,
    get_profile,
    profile_for,
)
from fmbench_k8s.simulator.tokenizer import count_tokens

# --- params -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_num_seqs", 0),
        ("max_num_seqs", 2.0),
        ("max_num_seqs", True),
        ("prefill_base_s", -0.001),
        ("prefill_s_per_token", math.nan),
        ("decode_base_s", math.inf),
        ("decode_base_s", "0.01"),
        ("batch_slowdown", -1.0),
        ("jitter_sigma", -0.1),
        ("seed", 1.5),
        ("error_rate", 1.01),
        ("error_rate", -0.01),
        ("error_status", 200),
        ("error_status", 600),
    ],
)
def test_params_rejects_invalid_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"SimParams.{field}"):
        SimParams(**{field: value})  # type: ignore[arg-type]


def test_params_accepts_edge_values() -> None:
    p = SimParams(max_num_seqs=1, prefill_base_s=0, decode_base_s=0, error_rate=1.0, error_status=429)
    assert p.itl_s(1) == 0.0
    assert p.prefill_s(0) == 0.0


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SimParams().max_num_seqs = 3  # type: ignore[misc]


def test_prefill_formula() -> None:
    p = SimParams(prefill_base_s=0.02, prefill_s_per_token=0.0001)
    assert p.prefill_s(1000) == pytest.approx(0.12)
    with pytest.raises(ValueError, match="prompt_tokens"):
        p.prefill_s(-1)


def test_itl_formula() -> None:
    p = SimParams(max_num_seqs=8, decode_base_s=0.02, batch_slowdown=0.5)
    assert p.itl_s(1) == pytest.approx(0.02)
    # decode_base * (1 + slowdown * (running - 1) / max_num_seqs)
    assert p.itl_s(5) == pytest.approx(0.02 * (1 + 0.5 * 4 / 8))
    assert p.itl_s(8) == pytest.approx(0.02 * 1.4375)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="running"):
            p.itl_s(bad)


def test_estimate_combines_the_formulas() -> None:
    p = SimParams(max_num_seqs=4, prefill_base_s=0.01, prefill_s_per_token=0.001, decode_base_s=0.01, batch_slowdown=1)
    est = estimate(p, prompt_tokens=100, output_tokens=11, running=3)
    assert est.ttft_s == pytest.approx(0.11)
    assert est.itl_s == pytest.approx(0.015)
    assert est.e2e_s == pytest.approx(0.11 + 10 * 0.015)


def test_tokenizer_counts_whitespace_words() -> None:
    assert count_tokens("") == 0
    assert count_tokens("  one\ttwo\nthree  ") == 3


# --- profiles ---------------------------------------------------------------


def test_profile_lookup_error_lists_known_types() -> None:
    with pytest.raises(UnknownInstanceTypeError) as info:
        profile_for("x9.nonexistent")
    message = str(info.value)
    assert "'x9.nonexistent'" in message
    for known in ("g5.2xlarge", "g6e.2xlarge", "p5.48xlarge", "inf2.8xlarge", "trn1.32xlarge", "m5.xlarge"):
        assert known in message
    # Callers may catch it as either lookup or value error.
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)


def test_profiles_are_illustrative_and_distinct() -> None:
    assert DEFAULT_INSTANCE_TYPE in PROFILES
    assert tuple(PROFILES) == SIMULATED_INSTANCE_TYPES  # the API's list is the simulator's
    for prof in PROFILES.values():
        assert prof.illustrative
        assert "llustrative" in prof.description
    # g6e is faster and roomier than g5/g6 (and pricier, per the analysis price table): the
    # trade-off the profiles exist to show.
    g5, g6, g6e = (get_profile(t) for t in ("g5.2xlarge", "g6.2xlarge", "g6e.2xlarge"))
    for cheap in (g5, g6):
        assert g6e.params.decode_base_s < cheap.params.decode_base_s
        assert g6e.params.max_num_seqs > cheap.params.max_num_seqs


def test_profile_for_applies_seed_and_jitter() -> None:
    p = profile_for("g5.2xlarge", seed=3, jitter_sigma=0.1)
    assert (p.seed, p.jitter_sigma) == (3, 0.1)
    assert p.max_num_seqs == get_profile("g5.2xlarge").params.max_num_seqs


# --- request parsing --------------------------------------------------------


def test_chat_prompt_tokens_sum_all_message_contents() -> None:
    body: dict[str, object] = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "one two three"},
                    {"type": "image_url", "image_url": {"url": synthetic_png(60, 30, Random(0)).data_url()}},
                ],
            },
            {"role": "assistant", "content": None},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = protocol.parse_chat(body)
    assert req.prompt_tokens == 5 + 3 * 2  # a 60×30 image: 3×2 squares of 28 px
    assert req.max_tokens == DEFAULT_MAX_TOKENS
    assert req.stream and req.include_usage


def test_completion_prompt_forms() -> None:
    assert protocol.parse_completion({"prompt": "a b c", "max_tokens": 4}).prompt_tokens == 3
    assert protocol.parse_completion({"prompt": ["a b"]}).prompt_tokens == 2
    assert protocol.parse_completion({"prompt": [1, 2, 3, 4]}).prompt_tokens == 4


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"content": 3}]},
        {"messages": [{"content": "a"}], "max_tokens": 0},
        {"messages": [{"content": "a"}], "max_tokens": "5"},
        {"messages": [{"content": "a"}], "stream": "yes"},
        {"messages": [{"content": "a"}], "stream_options": []},
    ],
)
def test_chat_bad_bodies(body: dict[str, object]) -> None:
    with pytest.raises(protocol.BadRequestError):
        protocol.parse_chat(body)


def test_triton_max_tokens_from_parameters() -> None:
    req = protocol.parse_triton({"text_input": "a b", "parameters": {"max_tokens": 7}}, stream=True)
    assert (req.prompt_tokens, req.max_tokens) == (2, 7)


# --- engine -----------------------------------------------------------------


def test_fault_injector_is_deterministic() -> None:
    seq1 = FaultInjector(0.3, 42)
    seq2 = FaultInjector(0.3, 42)
    draws1 = [seq1.next_fails() for _ in range(200)]
    draws2 = [seq2.next_fails() for _ in range(200)]
    assert draws1 == draws2
    assert 30 < sum(draws1) < 90
    assert not any(FaultInjector(0.0, 42).next_fails() for _ in range(50))
    assert all(FaultInjector(1.0, 42).next_fails() for _ in range(50))


def test_engine_fifo_order_and_slot_accounting() -> None:
    params = SimParams(max_num_seqs=1, prefill_base_s=0.005, prefill_s_per_token=0.0, decode_base_s=0.002)

    async def scenario() -> tuple[list[int], list[int], int]:
        engine = Engine(params)
        order: list[int] = []
        observed_waiting: list[int] = []

        async def request(k: int) -> None:
            async def emit(i: int) -> None:
                if i == 0:
                    order.append(k)
                    observed_waiting.append(engine.waiting)

            await engine.generate(1, 3, emit, RequestTiming(arrival_s=time.perf_counter()))

        tasks = []
        for k in range(5):
            tasks.append(asyncio.create_task(request(k)))
            await asyncio.sleep(0)  # fixes arrival order
        await asyncio.gather(*tasks)
        return order, observed_waiting, engine.running

    order, waiting, running_after = asyncio.run(scenario())
    assert order == [0, 1, 2, 3, 4]
    assert waiting == [4, 3, 2, 1, 0]
    assert running_after == 0


def test_engine_cancelled_waiter_does_not_leak_a_slot() -> None:
    params = SimParams(max_num_seqs=1, prefill_base_s=0.005, prefill_s_per_token=0.0, decode_base_s=0.001)

    async def scenario() -> tuple[int, int, list[int]]:
        engine = Engine(params)
        served: list[int] = []

        async def request(k: int) -> None:
            async def emit(i: int) -> None:
                if i == 0:
                    served.append(k)

            await engine.generate(0, 5, emit, RequestTiming(arrival_s=time.perf_counter()))

        first = asyncio.create_task(request(0))
        await asyncio.sleep(0)
        doomed = asyncio.create_task(request(1))
        await asyncio.sleep(0)
        last = asyncio.create_task(request(2))
        await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.gather(first, last)
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return engine.running, engine.waiting, served

    running, waiting, served = asyncio.run(scenario())
    assert (running, waiting) == (0, 0)
    assert served == [0, 2]


def test_engine_records_timing_model() -> None:
    params = SimParams(max_num_seqs=2, prefill_base_s=0.01, prefill_s_per_token=0.0, decode_base_s=0.004)

    async def scenario() -> RequestTiming:
        timing = RequestTiming(arrival_s=time.perf_counter())

        async def emit(_i: int) -> None:
            return None

        await Engine(params).generate(10, 6, emit, timing)
        return timing

    # Never early, in every attempt; late by at most one wake-up in at least one of three (a
    # loaded machine may oversleep any single attempt).
    on_time = []
    for _ in range(3):
        timing = asyncio.run(scenario())
        assert len(timing.token_times_s) == 6
        assert timing.ttft_s is not None and timing.e2e_s is not None
        assert timing.ttft_s >= 0.0095 and timing.e2e_s >= 0.0095 + 5 * 0.004
        # Deadline scheduling: the total cannot drift by more than one late wake-up.
        on_time.append(timing.ttft_s < 0.02 and timing.e2e_s < 0.03 + 0.008)
        if on_time[-1]:
            break
    assert any(on_time), "three attempts were all late by more than one wake-up"


def test_engine_shifts_schedule_after_a_stall_instead_of_bursting() -> None:
    params = SimParams(max_num_seqs=1, prefill_base_s=0.0, prefill_s_per_token=0.0, decode_base_s=0.005)

    async def scenario() -> list[float]:
        timing = RequestTiming(arrival_s=time.perf_counter())

        async def emit(i: int) -> None:
            if i == 2:
                time.sleep(0.03)  # blocks the whole loop, like an overloaded host

        await Engine(params).generate(0, 8, emit, timing)
        return timing.token_times_s

    times = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Tokens after the stall keep their spacing (4 x 5 ms) rather than coming out at once (~0 ms).
    # Late wake-ups only widen the span; 12 ms leaves room for the catch-up of one of them.
    assert times[-1] - times[3] >= 0.012, gaps


def test_jitter_is_seeded() -> None:
    params = SimParams(jitter_sigma=0.5, seed=11)
    a, b = Engine(params), Engine(params)
    draws_a = [a._jitter(1.0) for _ in range(20)]
    draws_b = [b._jitter(1.0) for _ in range(20)]
    assert draws_a == draws_b
    assert len(set(draws_a)) == 20
    assert Engine(SimParams())._jitter(0.25) == 0.25


# --- CLI argument handling --------------------------------------------------


def test_cli_profile_with_overrides() -> None:
    args = cli.build_parser().parse_args(["--profile", "g5.2xlarge", "--max-num-seqs", "3", "--seed", "9"])
    params = cli.params_from_args(args)
    base = get_profile("g5.2xlarge").params
    assert params == dataclasses.replace(base, max_num_seqs=3, seed=9)


def test_cli_unknown_profile_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--profile", "nope.large"]) == 2
    assert "known types" in capsys.readouterr().err


def test_cli_invalid_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--max-num-seqs", "0"]) == 2
    assert "max_num_seqs" in capsys.readouterr().err


def test_cli_lists_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list-profiles"]) == 0
    out = capsys.readouterr().out
    assert "ILLUSTRATIVE" in out
    assert all(t in out for t in PROFILES)
