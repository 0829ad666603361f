"""Messages between the master and the workers (Locust custom messages, msgpack over ZeroMQ). Pure.

master → workers: ``fmb_stage`` (a StagePlan), ``fmb_extend`` (a later steady end), ``fmb_abort``.
workers → master: ``fmb_hello`` (after connecting), ``fmb_progress`` (every 0.5 s in a stage),
``fmb_result`` (a StageResult, once the stage has drained and its records are flushed).
Latency samples travel as packed little-endian float arrays: exact values, compact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

STAGE = "fmb_stage"
EXTEND = "fmb_extend"
ABORT = "fmb_abort"
HELLO = "fmb_hello"
PROGRESS = "fmb_progress"
RESULT = "fmb_result"


def pack(values: Sequence[float] | np.ndarray, dtype: str = "<f8") -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


def unpack(data: bytes, dtype: str = "<f8") -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).astype(np.float64)


@dataclass(frozen=True)
class StagePlan:
    """One stage, in wall-clock epoch seconds (workers' clocks are NTP-synced; pods, too)."""

    stage: int
    arrival: str  # closed | poisson | constant | trace
    target: float  # concurrency (all workers) or requests/s (all workers)
    t_start: float  # load begins
    steady_start: float  # warm-up over
    steady_end: float  # nothing is scheduled at or after this
    drain_end: float  # still in flight now = incomplete
    seed: str  # open loop: the shared schedule's seed
    workers: dict[str, int] = field(default_factory=dict)  # Locust client id -> worker index

    def to_msg(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_msg(cls, data: dict[str, Any]) -> StagePlan:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass
class StageResult:
    """A worker's account of one stage: counts of all its rows and of those in the steady window,
    and the exact SLO samples of its ok requests in the window."""

    stage: int
    worker: str
    client_id: str
    scheduled: int = 0
    ok: int = 0
    errors: int = 0
    incomplete: int = 0
    window_scheduled: int = 0
    window_ok: int = 0
    window_errors: int = 0
    window_incomplete: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    ttft: bytes = b""
    e2e: bytes = b""
    tpot: bytes = b""
    itl: bytes = b""  # float32: every gap of every ok request in the window
    window_output_tokens: int = 0
    window_prompt_tokens: int = 0
    rows_written: int = 0
    rows_unwritten: int = 0  # left in memory because storage failed
    t_end: float = 0.0  # when this worker's share of the stage was over
    schedule_lag_p99_s: float | None = None
    selfcheck: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def to_msg(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_msg(cls, data: dict[str, Any]) -> StageResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
