"""Which load levels run and in which order. Pure: no I/O, no gevent. A stage's verdict is
fmbench_k8s.contract.verdict's, the same the analysis gives.

Levels come from the spec's ``Levels``: an explicit list, or ``min..max``. ``sweep`` and ``fixed``
run their levels in order. ``search`` brackets by doubling from ``min`` until a level fails (or
``max`` passes), then bisects between the last pass and the first failure until
``(fail - pass) / pass <= tolerance``, the levels are adjacent, or ``max_stages`` is spent. The
answer, c*, is the highest level that met the SLO (None, with the reason, when none did).

Concurrency levels are integers; rates (requests/s) are real numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from fmbench_k8s.api.spec import BenchmarkSpec, Levels, Load
from fmbench_k8s.contract.stats import min_samples

Decision = Literal["continue", "done"]


def candidate_levels(levels: Levels, integer: bool) -> list[float]:
    """Explicit levels in the given order, or min, 2·min, 4·min, … below max, then max."""
    if levels.levels is not None:
        raw = list(levels.levels)
    else:
        assert levels.min is not None and levels.max is not None  # the model enforces one form
        raw = []
        level = levels.min
        while level < levels.max:
            raw.append(level)
            level *= 2
        raw.append(levels.max)
    out: list[float] = []
    for value in raw:
        v = float(max(1, round(value))) if integer else float(value)
        if v not in out:
            out.append(v)
    return out


def is_integer_load(load: Load) -> bool:
    """Concurrency (closed loop) is a whole number of users; a rate is not."""
    return load.arrival == "closed"


def split_concurrency(total: int, workers: int, index: int) -> int:
    """Worker ``index``'s share of ``total`` user slots (slots k, k+n, k+2n, … of the global list)."""
    if workers < 1 or not 0 <= index < workers:
        raise ValueError(f"worker index {index} out of range for {workers} workers")
    return total // workers + (1 if index < total % workers else 0)


# -- the SLO verdict of one stage -----------------------------------------------------------------


def required_requests(spec: BenchmarkSpec) -> int:
    """Requests the master extends a stage's steady window for: minRequestsPerStage, and at least
    enough to put a confidence interval on the SLO percentile (72 for p95)."""
    return max(spec.load.min_requests_per_stage, min_samples(spec.slo.latency.percentile / 100))


# Error reasons that mean the endpoint could not be reached at all: it was down, not slow.
UNREACHABLE = frozenset({"connection_refused", "dns_error", "host_unreachable", "network_unreachable"})


def endpoint_lost(errors_by_reason: Iterable[Mapping[str, int]], scheduled: int, max_error_rate: float) -> str | None:
    """Why a stage measured an outage rather than the load, or None.

    Connections refused (or names unresolved, hosts unreachable) mean the server was not there,
    not slow. When they alone would fail the SLO's error rate, the stage says nothing about its
    level: it is run again once the endpoint answers. Fewer are network blips the SLO tolerates."""
    reasons: Counter[str] = Counter()
    for counts in errors_by_reason:
        reasons.update({k: v for k, v in counts.items() if k in UNREACHABLE})
    if not scheduled or sum(reasons.values()) <= max_error_rate * scheduled:
        return None
    return ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())


# -- level planners --------------------------------------------------------------------------------


@dataclass
class Trial:
    level: float
    passed: bool
    reason: str | None = None


@dataclass
class Planner:
    """Base: feeds levels one at a time; ``record`` the outcome of each before asking again."""

    max_stages: int
    trials: list[Trial] = field(default_factory=list)
    note: str | None = None

    def next_level(self) -> float | None:
        raise NotImplementedError

    def record(self, level: float, passed: bool, reason: str | None = None) -> None:
        self.trials.append(Trial(level, passed, reason))

    @property
    def best(self) -> float | None:
        """c*: the highest level that met the SLO."""
        passed = [t.level for t in self.trials if t.passed]
        return max(passed) if passed else None

    @property
    def failure_reason(self) -> str | None:
        """Why there is no c* (None when there is one, or nothing ran)."""
        if self.best is not None or not self.trials:
            return None
        first = self.trials[0]
        return f"no level met the SLO; at {first.level:g}: {first.reason or 'failed'}"

    def remaining_upper_bound(self) -> int:
        """At most this many more stages (for ETAs)."""
        raise NotImplementedError


@dataclass
class Sweep(Planner):
    """``sweep`` and ``fixed``: every level, in order."""

    levels: list[float] = field(default_factory=list)

    def next_level(self) -> float | None:
        done = len(self.trials)
        if done >= min(len(self.levels), self.max_stages):
            return None
        return self.levels[done]

    def remaining_upper_bound(self) -> int:
        return max(0, min(len(self.levels), self.max_stages) - len(self.trials))


@dataclass
class Search(Planner):
    """Bracket by doubling, then bisect; see the module docstring."""

    lo: float = 1.0
    hi: float = 1.0
    integer: bool = True
    tolerance: float = 0.1
    explicit: list[float] | None = None  # search over a given list: doubling and bisection by index
    _next: float | None = None
    _started: bool = False

    def _index(self, level: float) -> int:
        assert self.explicit is not None
        return self.explicit.index(level)

    def _double(self, level: float) -> float:
        if self.explicit is not None:
            i = self._index(level)
            return self.explicit[min(2 * i + 1, len(self.explicit) - 1)]
        nxt = min(level * 2, self.hi)
        return float(math.floor(nxt)) if self.integer else nxt

    def _mid(self, passed: float, failed: float) -> float | None:
        if self.explicit is not None:
            i, j = self._index(passed), self._index(failed)
            return self.explicit[(i + j) // 2] if j - i > 1 else None
        if self.integer:
            mid = float(math.floor((passed + failed) / 2))
            return mid if passed < mid < failed else None
        return (passed + failed) / 2

    def _within_tolerance(self, passed: float, failed: float) -> bool:
        return (failed - passed) / passed <= self.tolerance

    def next_level(self) -> float | None:
        if not self._started:
            self._started = True
            self._next = self.explicit[0] if self.explicit is not None else self.lo
        if self._next is not None and len(self.trials) >= self.max_stages:
            self.note = f"maxStages ({self.max_stages}) reached before the search converged"
            self._next = None
        return self._next

    def record(self, level: float, passed: bool, reason: str | None = None) -> None:
        super().record(level, passed, reason)
        top = self.explicit[-1] if self.explicit is not None else self.hi
        fails = [t.level for t in self.trials if not t.passed]
        best = self.best
        if best is None:
            self._next = None  # the lowest level already fails: nothing below to try
            return
        first_fail = min((f for f in fails if f > best), default=None)
        if first_fail is None:
            if best >= top:
                self._next = None
                self.note = f"the SLO is met at the highest level {top:g}; capacity may be higher"
            else:
                self._next = self._double(best)
            return
        if self._within_tolerance(best, first_fail):
            self._next = None
            return
        self._next = self._mid(best, first_fail)

    def remaining_upper_bound(self) -> int:
        if self._next is None and self._started:
            return 0
        left = self.max_stages - len(self.trials)
        best = self.best or (self.explicit[0] if self.explicit else self.lo)
        top = self.explicit[-1] if self.explicit else self.hi
        doublings = max(0, math.ceil(math.log2(max(top / best, 1.0))))
        bisections = max(1, math.ceil(math.log2(1 / self.tolerance)))
        return max(0, min(left, doublings + bisections + 1))


def planner_for(load: Load) -> Planner:
    """The planner of a spec's ``load`` section."""
    integer = is_integer_load(load)
    levels = load.active_levels
    if load.mode != "search":
        return Sweep(max_stages=10_000 if load.mode == "sweep" else 1, levels=candidate_levels(levels, integer))
    if levels.levels is not None:
        explicit = sorted(candidate_levels(levels, integer))
        return Search(max_stages=load.max_stages, integer=integer, tolerance=load.tolerance, explicit=explicit,
                      lo=explicit[0], hi=explicit[-1])  # fmt: skip
    assert levels.min is not None and levels.max is not None
    lo = float(max(1, round(levels.min))) if integer else levels.min
    hi = float(max(lo, round(levels.max))) if integer else levels.max
    return Search(max_stages=load.max_stages, integer=integer, tolerance=load.tolerance, lo=lo, hi=hi)
