"""The asyncio scheduler that turns the timing model into real sleeps.

No HTTP here: the server passes an ``emit`` coroutine that writes one token,
and tests can drive the engine directly with small timings.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fmbench_k8s.simulator.params import SimParams

Emit = Callable[[int], Awaitable[None]]

# Lateness up to this (timer granularity, the loop working through a batch of
# due tokens on a busy server) is made up by the absolute deadlines; a longer
# stall re-anchors the schedule instead (see generate()).
MAX_CATCH_UP_S = 0.010


# Gain of the wake-up lag estimator and the largest lag it may correct.
_LAG_GAIN = 0.05
_MAX_LAG_S = 0.002


@dataclass(slots=True)
class RequestTiming:
    """Measured timestamps (time.perf_counter) of one request, filled in as it runs.

    Mutable on purpose: if the client disconnects mid-stream the server still
    reads how far the request got, to keep the token counters honest.
    """

    arrival_s: float
    admitted_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)

    @property
    def ttft_s(self) -> float | None:
        return self.token_times_s[0] - self.arrival_s if self.token_times_s else None

    @property
    def e2e_s(self) -> float | None:
        return self.token_times_s[-1] - self.arrival_s if self.token_times_s else None


class FaultInjector:
    """Deterministic 'should this request fail' sequence for ``error_rate``."""

    def __init__(self, error_rate: float, seed: int) -> None:
        self._rate = error_rate
        # Separate stream from the jitter RNG so enabling jitter does not
        # change which requests fail.
        self._rng = random.Random(seed ^ 0x5EED_FA11)

    def next_fails(self) -> bool:
        if self._rate <= 0.0:
            return False
        return self._rng.random() < self._rate


class Engine:
    """FIFO slot queue plus the per-token sleep loop."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._jitter_rng = random.Random(params.seed)
        self._faults = FaultInjector(params.error_rate, params.seed)
        self._wake_lag = 0.0

    @property
    def running(self) -> int:
        """Requests holding a slot (prefilling or decoding)."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return sum(1 for f in self._waiters if not f.done())

    def next_request_fails(self) -> bool:
        return self._faults.next_fails()

    def _learn_lag(self, late: float) -> None:
        # Event loops wake up late (stdlib: ms-rounded epoll timeouts) or early
        # (uvloop: ms-floored clock, rounded delays) by a roughly constant
        # amount.  Deadlines already keep that out of the gaps, but not out of
        # TTFT; this integral controller shortens sleeps by the learned lag so
        # that the mean lateness of a wake-up converges to zero.
        lag = self._wake_lag + _LAG_GAIN * late
        self._wake_lag = min(max(lag, -_MAX_LAG_S), _MAX_LAG_S)

    def _jitter(self, seconds: float) -> float:
        sigma = self.params.jitter_sigma
        if sigma == 0.0:
            return seconds
        return seconds * self._jitter_rng.lognormvariate(0.0, sigma)

    async def _acquire(self) -> None:
        # Fast path only when nobody is queued, otherwise a newcomer could
        # overtake the queue head between a release and its wake-up.
        if self._running < self.params.max_num_seqs and not self._waiters:
            self._running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed over just before we were cancelled.
                self._release()
            else:
                self._waiters.remove(fut)
            raise

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                # Hand the slot over directly: ``running`` is unchanged.
                fut.set_result(None)
                return
        self._running -= 1

    async def generate(self, prompt_tokens: int, output_tokens: int, emit: Emit, timing: RequestTiming) -> None:
        """Queue, prefill, then emit ``output_tokens`` tokens on model time.

        ``timing.arrival_s`` must already be set (time.perf_counter() at arrival).
        """
        params = self.params
        clock = time.perf_counter
        await self._acquire()
        try:
            # Deadlines on perf_counter rather than loop.time(): uvloop's loop
            # clock has 1 ms steps, which would bias every deadline.
            now = clock()
            timing.admitted_s = now
            deadline = now + self._jitter(params.prefill_s(prompt_tokens))
            times = timing.token_times_s
            last = output_tokens - 1
            for i in range(output_tokens):
                delay = deadline - clock()
                # sleep(0) still yields, so a stream behind schedule cannot
                # starve the others.
                await asyncio.sleep(delay - self._wake_lag if delay > 0.0 else 0.0)
                late = clock() - deadline
                if late > MAX_CATCH_UP_S:
                    # The host stalled us (CPU contention, GC, overload): shift
                    # the rest of the schedule instead of bursting tokens out
                    # back-to-back, which no real server does.
                    deadline += late
                elif delay > 0.0:
                    self._learn_lag(late)
                if i < last:
                    # This instant is when the next token's wait starts.
                    deadline += self._jitter(params.itl_s(self._running))
                await emit(i)
                times.append(clock())
        finally:
            self._release()
