"""Prompts made ahead (``prompts.make_ahead``, the open loop's dispatcher) are the stream's
prompts in the order made one by one would give, each with the body its client encodes."""

from __future__ import annotations

import time
from collections import deque

from fmbench_k8s.api.spec import Workload
from fmbench_k8s.loadgen.prompts import AHEAD_MOST, Prompt, PromptSource, make_ahead


def test_prompts_made_ahead_are_the_streams_prompts_in_order_with_their_bodies() -> None:
    workload = Workload.model_validate({
        "requestsPerMinute": 600, "promptTokens": {"mean": 40, "stddev": 20, "min": 5, "max": 80},
        "outputTokens": {"mean": 30, "stddev": 10}, "seed": 7,
    })  # fmt: skip
    source, one_by_one = PromptSource(workload, "0:1"), PromptSource(workload, "0:1")
    ready: deque[tuple[Prompt, bytes | None]] = deque()
    taken = []
    for _ in range(3 * AHEAD_MOST + 5):
        if not ready:
            make_ahead(source, lambda p: p.text.encode(), ready)
            assert 1 <= len(ready) <= AHEAD_MOST
        taken.append(ready.popleft())
    expected = [one_by_one.next() for _ in taken]
    assert [p for p, _ in taken] == expected
    assert [body for _, body in taken] == [p.text.encode() for p in expected]
    assert len({(p.prompt_tokens, p.max_tokens) for p in expected}) > 3


def test_making_ahead_stops_at_its_time_budget_but_makes_one() -> None:
    workload = Workload.model_validate(
        {"requestsPerMinute": 60, "promptTokens": {"mean": 8}, "outputTokens": {"mean": 4}}
    )
    ready: deque[tuple[Prompt, bytes | None]] = deque()

    def slow(prompt: Prompt) -> bytes:
        time.sleep(0.002)  # longer than the budget: one prompt, then stop
        return b"x"

    make_ahead(PromptSource(workload, "0:1"), slow, ready)
    assert len(ready) == 1
