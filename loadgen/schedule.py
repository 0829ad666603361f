"""Open-loop arrival schedules. Pure.

The master sends one seed per stage; every worker generates the same global schedule from it and
takes every n-th arrival (worker k of n takes arrivals k, k+n, k+2n, ...), so the union of what
the workers send is exactly the offered process: a Poisson process of rate λ (exponential gaps)
or a constant one (gaps 1/λ), or a trace's arrivals time-scaled to a mean rate λ (contract/traces.py).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from fmbench_k8s.contract.traces import Replay


def stage_seed(workload_seed: int, variant: str, stage: int) -> str:
    """The seed string of one stage's schedule (distinct per variant and stage, reproducible)."""
    return f"fmbench-arrivals:{workload_seed}:{variant}:{stage}"


def arrival_offsets(kind: str, rate: float, seed: str, replay: Replay | None = None) -> Iterator[float]:
    """Endless offsets (seconds after the stage start) of the global schedule."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    if kind == "constant":
        return (i / rate for i in itertools.count())
    if kind == "poisson":
        return _poisson(rate, random.Random(seed))
    if kind == "trace":
        if replay is None:
            raise ValueError("arrival trace needs the trace (workload.trace)")
        return replay.offsets_at(rate)
    raise ValueError(f"unknown open-loop arrival {kind!r}: use poisson, constant or trace")


def _poisson(rate: float, rng: random.Random) -> Iterator[float]:
    t = 0.0
    while True:
        yield t
        t += rng.expovariate(rate)


def worker_offsets(
    kind: str, rate: float, seed: str, index: int, workers: int, *, replay: Replay | None = None
) -> Iterator[tuple[int, float]]:
    """(global arrival number, offset) of the arrivals worker ``index`` of ``workers`` sends."""
    if workers < 1 or not 0 <= index < workers:
        raise ValueError(f"worker index {index} out of range for {workers} workers")
    return itertools.islice(enumerate(arrival_offsets(kind, rate, seed, replay)), index, None, workers)
