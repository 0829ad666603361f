"""Is the load generator itself the bottleneck? Event-loop lag and process CPU, per stage.

A greenlet sleeps ``tick`` seconds in a loop and records how late it woke up: when the gevent
hub is saturated (too many streams for one core) every timestamp is late by about that much. The
tick is 50 ms: each tick is a wake-up of its own, and at 100 a second (a 10 ms tick) they were
~5% of a worker's CPU at 250 streams (docs/performance.md); 20 a second still give a stage's lag
p99 from a thousand samples a minute.
CPU comes from psutil once per second. A stage is client-bound when the lag's p99 exceeds 50 ms
or the mean CPU exceeds 90% of a core; a request is flagged when either held in the second
before it was sent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import gevent
import numpy as np
import psutil

LAG_LIMIT_S = 0.050
CPU_LIMIT_PERCENT = 90.0


@dataclass(frozen=True)
class SelfCheck:
    loop_lag_p99_s: float
    loop_lag_max_s: float
    cpu_mean_percent: float
    cpu_max_percent: float
    client_bound: bool
    rss_mb: float  # resident memory at the stage's end: stable across stages, or the worker leaks

    def as_dict(self) -> dict[str, float | bool]:
        return {"loop_lag_p99_s": self.loop_lag_p99_s, "loop_lag_max_s": self.loop_lag_max_s,
                "cpu_mean_percent": self.cpu_mean_percent, "cpu_max_percent": self.cpu_max_percent,
                "client_bound": self.client_bound, "rss_mb": self.rss_mb}  # fmt: skip


class Monitor:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._lags: list[float] = []
        self._cpu: list[float] = []
        self._recent_lag = 0.0
        self._last_big_lag = -math.inf  # perf_counter of the last lag above LAG_LIMIT_S
        self.cpu_now = 0.0
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._greenlets: list[gevent.Greenlet] = []

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._lag_loop), gevent.spawn(self._cpu_loop)]

    def stop(self) -> None:
        gevent.killall(self._greenlets)

    def _lag_loop(self) -> None:
        clock, tick = time.perf_counter, self.tick
        window_start, window_max = clock(), 0.0
        while True:
            t0 = clock()
            gevent.sleep(tick)
            now = clock()
            lag = max(0.0, now - t0 - tick)
            self._lags.append(lag)
            if lag > LAG_LIMIT_S:
                self._last_big_lag = now
            window_max = max(window_max, lag)
            if now - window_start >= 1.0:
                self._recent_lag, window_max, window_start = window_max, 0.0, now

    def _cpu_loop(self) -> None:
        while True:
            gevent.sleep(1.0)
            self.cpu_now = float(self._proc.cpu_percent(None))
            self._cpu.append(self.cpu_now)

    @property
    def bound_now(self) -> bool:
        """The hub lagged more than 50 ms within the last second, or the last second's CPU > 90%."""
        return time.perf_counter() - self._last_big_lag < 1.0 or self.cpu_now > CPU_LIMIT_PERCENT

    @property
    def recent_lag(self) -> float:
        return self._recent_lag

    def reset(self) -> None:
        """Start a new stage's window. What happened before (start-up, the collection the worker
        runs between stages) does not count against the stage."""
        self._lags, self._cpu = [], []
        self._last_big_lag = -math.inf
        self._recent_lag = 0.0
        self.cpu_now = 0.0
        self._proc.cpu_percent(None)

    def summary(self) -> SelfCheck:
        lags = np.asarray(self._lags or [0.0])
        cpu = np.asarray(self._cpu or [self.cpu_now])
        p99 = float(np.percentile(lags, 99))
        mean_cpu = float(cpu.mean())
        return SelfCheck(p99, float(lags.max()), mean_cpu, float(cpu.max()),
                         p99 > LAG_LIMIT_S or mean_cpu > CPU_LIMIT_PERCENT,
                         self._proc.memory_info().rss / 2**20)  # fmt: skip
