"""The per-request record: one row per scheduled request (ok, error or incomplete).

This is the contract between the load generator (writer) and the analysis (reader); the column
meanings are defined in docs/metrics.md. Times are epoch seconds (float); durations are seconds.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
OUTCOME_INCOMPLETE: Final = "incomplete"  # still in flight when its stage's drain period ended
OUTCOMES: Final = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_INCOMPLETE)

# A record's gaps: float32 little-endian, end to end, in a large_binary value (its 64-bit offsets
# reach past the 2 GiB of gaps a big stage can hold in one chunk).
ITL_DTYPE: Final = np.dtype("<f4")
ITL_TYPE: Final = pa.large_binary()

SCHEMA: Final = pa.schema(
    [
        ("variant", pa.string()),
        ("stage", pa.int32()),
        ("target_concurrency", pa.float64()),  # closed loop: concurrent users; else null
        ("target_rate", pa.float64()),  # open loop: offered requests/s; else null
        ("request_id", pa.string()),
        ("worker", pa.string()),
        ("t_scheduled", pa.float64()),  # when the request was due (open loop) or its user was free
        ("t_sent", pa.float64()),
        ("t_first_byte", pa.float64()),
        ("t_first_token", pa.float64()),  # first non-empty token: answer or reasoning
        ("t_first_answer", pa.float64()),  # first non-empty answer token (after any reasoning); TTFO
        ("t_last_token", pa.float64()),
        ("t_end", pa.float64()),
        ("ttft_s", pa.float64()),
        ("e2e_s", pa.float64()),
        ("tpot_s", pa.float64()),
        ("itl_mean_s", pa.float64()),
        ("itl_max_s", pa.float64()),
        # every gap between consecutive content events, as float32 little-endian bytes end to end
        # (itl_gaps() reads one): Arrow reads a binary column ~4x faster than list<float32>,
        # whose levels it decodes per gap, and the gaps are most of a stage's bytes
        ("itl_s", ITL_TYPE),
        ("prompt_tokens", pa.int64()),
        ("bucket", pa.string()),  # the workload's prompt-length bucket; null without buckets
        ("images", pa.int32()),  # images sent with the prompt; null without images
        ("image_bytes", pa.int64()),  # their encoded size, bytes
        ("image_pixels", pa.int64()),  # their width × height, summed
        ("image_size", pa.string()),  # workload.images.sizes' name; a dataset's: megapixels per image
        ("turn", pa.int32()),  # 1-based turn of its conversation; null without workload.conversation
        ("output_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),  # of output_tokens, those the server says were reasoning (usage)
        ("token_source", pa.string()),  # server (usage) | client (counted events)
        ("outcome", pa.string()),  # ok | error | incomplete
        ("ok", pa.bool_()),
        ("error", pa.string()),  # reason, e.g. http_429, timeout, connection_reset, malformed_sse
        ("http_status", pa.int32()),
        ("in_steady_window", pa.bool_()),  # t_scheduled inside the stage's steady window
        ("client_bound", pa.bool_()),  # the worker was the bottleneck when this request was sent
        ("prompt", pa.string()),  # spec.evaluation: the prompt's text (capped at maxAnswerChars), for judges
        ("answer", pa.string()),  # spec.evaluation: the answer's text (capped at maxAnswerChars); else null
        ("reference", pa.list_(pa.string())),  # spec.evaluation: the dataset row's reference answer(s)
    ]
)
COLUMNS: Final = tuple(SCHEMA.names)
# How a shard is written (loadgen/writer.py; analysis/synthetic.py for tests and benchmarks):
# LZ4, which the analysis decodes about twice as fast as zstd, and dictionaries for the strings
# only. The float gaps that make most of a shard barely compress (zstd saves ~18 % of LZ4's size)
# and rarely repeat: their dictionary pages only slowed the reading (docs/performance.md).
PARQUET_WRITE: Final = {
    "compression": "lz4",
    "use_dictionary": [f.name for f in SCHEMA if pa.types.is_string(f.type)],
}


def itl_gaps(value: bytes | None) -> npt.NDArray[np.float32]:
    """One record's ``itl_s``: its gaps in seconds (none for a null)."""
    return np.frombuffer(value or b"", dtype=ITL_DTYPE)


def itl_bytes(gaps: npt.ArrayLike) -> bytes:
    """The ``itl_s`` value of these gaps (seconds)."""
    return np.asarray(gaps, dtype=ITL_DTYPE).tobytes()


def binary_offsets(arr: pa.Array) -> npt.NDArray[np.int64]:
    """The len + 1 offsets of a (large) binary array into its data buffer (pyarrow has no
    ``.offsets`` for one)."""
    buffer = arr.buffers()[1]
    if buffer is None:
        return np.zeros(len(arr) + 1, dtype=np.int64)
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    return np.frombuffer(buffer, dtype=width)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def itl_column(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """An ``itl_s`` column as SCHEMA has it (large_binary: a stage's gaps may pass 2 GiB, the
    reach of binary's 32-bit offsets). Binary is cast; lists of floats (shards written before
    2026-12-03, hand-made tables) become their values' float32 bytes, nothing copied but a cast."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([itl_column(c) for c in column.chunks], ITL_TYPE)
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), ITL_TYPE)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return column.cast(ITL_TYPE)  # what cannot be cast fails here, as any column would
    start, end = column.offsets[0].as_py(), column.offsets[-1].as_py()
    values = column.values.slice(start, end - start).cast(pa.float32())
    if values.null_count:
        raise ValueError("itl_s has a null gap inside a list; a gap is always a number")
    data = np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=ITL_DTYPE)
    offsets = (column.offsets.to_numpy().astype(np.int64) - start) * ITL_DTYPE.itemsize
    validity = column.is_valid().buffers()[1] if column.null_count else None
    return pa.Array.from_buffers(ITL_TYPE, len(column), [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


# Without these a record cannot be counted or placed in a stage: a shard lacking one is refused.
REQUIRED_COLUMNS: Final = ("variant", "stage", "request_id", "t_scheduled", "outcome")

# The error reason of an "ok" record whose values are impossible (docs/metrics.md): it is counted
# as an error with this reason and the value that was wrong, never used as a sample.
INVALID_RECORD: Final = "invalid_record"
_SLACK: Final = 1e-6  # clock rounding between two recorded timestamps of one request


def invalid_values(
    *,
    ttft: npt.NDArray[np.float64],
    ttfo: npt.NDArray[np.float64],
    e2e: npt.NDArray[np.float64],
    since_scheduled: npt.NDArray[np.float64],
    itl_max: npt.NDArray[np.float64],
    prompt_tokens: npt.NDArray[np.float64],
    output_tokens: npt.NDArray[np.float64],
) -> npt.NDArray[np.object_]:
    """Per record, ``invalid_record:<what>`` when a successful request's values cannot be true,
    else None. Missing (NaN) values are allowed except e2e, which every answer has."""
    with np.errstate(invalid="ignore"):
        checks = (
            ("e2e", ~np.isfinite(e2e) | (e2e < 0)),
            ("ttft", np.isinf(ttft) | (ttft < 0)),
            ("ttft_after_e2e", ttft > e2e + _SLACK),
            # the first answer token is a token: not before the first one, not after the last
            ("ttfo", np.isinf(ttfo) | (ttfo < ttft - _SLACK) | (ttfo > e2e + _SLACK)),
            ("end_before_scheduled", np.isinf(since_scheduled) | (since_scheduled < -_SLACK)),
            ("itl", np.isinf(itl_max) | (itl_max < 0)),
            ("tokens", np.isinf(prompt_tokens) | (prompt_tokens < 0) | np.isinf(output_tokens) | (output_tokens < 0)),
        )
    out = np.full(e2e.shape, None, dtype=np.object_)
    for what, bad in reversed(checks):  # the first check that applies names the reason
        out[bad] = f"{INVALID_RECORD}:{what}"
    return out


class ClientHealth(BaseModel):
    """How the load workers fared in a stage, each figure the worst worker's: whether the numbers
    measure the server or the client (docs/loadgen.md, "Self-check")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_lag_p99_s: float | None = Field(default=None, description="open loop: how late requests were sent")
    loop_lag_p99_s: float | None = Field(default=None, description="the worker's event-loop lag")
    cpu_percent: float | None = Field(default=None, description="the busiest worker's mean CPU (100 = one core)")
    rss_mb: float | None = Field(default=None, description="the largest worker's resident memory at the stage's end")


class StageInfo(BaseModel):
    """One load stage as it actually ran, written by the load generator's master to
    ``stages/<variant>.json`` (a JSON list) beside the records. Throughput is counted over the
    steady window ``[steady_start, steady_end)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: str
    stage: int = Field(ge=0)
    target_concurrency: float | None = None
    target_rate: float | None = None
    start: float = Field(description="epoch seconds: load begins (warm-up starts)")
    steady_start: float = Field(description="epoch seconds: warm-up over")
    steady_end: float = Field(description="epoch seconds: no request is scheduled at or after this")
    end: float = Field(description="epoch seconds: drain over; still in flight = incomplete")
    workers: int = Field(ge=1)
    client_bound: bool = False
    client: ClientHealth | None = None  # absent in runs written before it existed
    interrupted: bool = False  # cut short (Ctrl-C, deletion): its verdict is "inconclusive"
    note: str | None = None

    @property
    def steady_seconds(self) -> float:
        return self.steady_end - self.steady_start


def records_key(variant: str, stage: int, worker: str, part: int) -> str:
    """Run-relative key of one Parquet shard; shards are flushed every few seconds."""
    return f"records/{variant}/{stage:03d}-{worker}-{part:05d}.parquet"


# records_key's layout, and nothing else: a key nested deeper (another run whose prefix points
# inside this one's records/) or named otherwise is not one of this run's shards.
_RECORDS_KEY: Final = re.compile(
    r"^records/(?P<variant>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(?P<stage>[0-9]{3,})-[^/]+-[0-9]{5,}\.parquet$"
)


def parse_records_key(key: str) -> tuple[str, int] | None:
    """(variant, stage) of a run-relative key in records_key's layout, else None."""
    m = _RECORDS_KEY.match(key)
    return (m["variant"], int(m["stage"])) if m else None


def stages_key(variant: str) -> str:
    return f"stages/{variant}.json"
