"""Per variant × stage metrics from the per-request records (definitions: docs/metrics.md).

Counting covers every scheduled request of a stage (nothing is dropped); rates and latency
distributions cover the stage's steady window only: requests whose ``t_scheduled`` lies in
``[steady_start, steady_end)``. Latencies are over ok requests of that window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fmbench_k8s.analysis._distinct import distinct_strings
from fmbench_k8s.contract.records import (
    INVALID_RECORD,
    ITL_DTYPE,
    OUTCOME_ERROR,
    OUTCOME_INCOMPLETE,
    OUTCOME_OK,
    OUTCOMES,
    ClientHealth,
    StageInfo,
    binary_offsets,
    invalid_values,
)
from fmbench_k8s.contract.stats import Concatenation, FloatArray, QuantileCi, Summary, summarize
from fmbench_k8s.contract.verdict import Bound, Kind, Outcome, SloRule, StageCounts, judge

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

LATENCY_METRICS: Final = ("ttft", "ttfo", "tpot", "itl", "e2e", "ntpot", "e2eFromScheduled")


class AccountingError(ValueError):
    """Records that do not add up: a request counted twice, or with no valid outcome."""


@dataclass(frozen=True)
class BucketMetrics:
    """One prompt-length bucket's share of a stage's steady window (workload.buckets)."""

    name: str
    steady_requests: int
    steady_ok: int
    error_rate: float
    throughput_rpm: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    goodput_rps: float
    latency: dict[str, Summary]  # keys: BUCKET_LATENCY
    slo_value: float
    slo_ci: QuantileCi
    outcome: Outcome
    failures: tuple[str, ...]
    mean_image_bytes: float = math.nan  # images' encoded bytes per ok request; NaN without images


BUCKET_LATENCY: Final = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class StageMetrics:
    variant: str
    stage: int
    target: float | None
    target_kind: Literal["concurrency", "rate"]
    window_start: float
    window_end: float
    # every request scheduled in the stage (warm-up and drain included)
    requests: int
    ok: int
    errors: int
    incomplete: int
    errors_by_reason: dict[str, int]
    # the steady window
    steady_requests: int
    steady_ok: int
    steady_errors: int
    steady_incomplete: int
    error_rate: float
    throughput_rpm: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    goodput_rps: float
    slo_attainment: float
    latency: dict[str, Summary]  # keys: LATENCY_METRICS
    slo_value: float
    slo_ci: QuantileCi
    outcome: Outcome  # meets | fails | inconclusive (contract.verdict)
    verdict: Kind
    meets_slo: bool
    failures: tuple[str, ...]  # one sentence per unmet condition
    client_bound: bool
    client_bound_share: float
    notes: tuple[str, ...] = field(default=())
    client: ClientHealth | None = None
    buckets: tuple[BucketMetrics, ...] = ()  # by name; empty without workload.buckets
    image_sizes: tuple[BucketMetrics, ...] = ()  # by workload.images.sizes' name; empty without them
    mean_image_bytes: float = math.nan  # images' encoded bytes per ok request; NaN without images
    bounds: tuple[Bound, ...] = ()  # each latency bound's test, slo.latency first
    # per-request TTFT and TPOT of the window's ok requests, for histograms; not part of the report
    samples: Mapping[str, FloatArray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def window_s(self) -> float:
        return self.window_end - self.window_start


def _floats(frame: pd.DataFrame, column: str) -> FloatArray:
    return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _bools(frame: pd.DataFrame, column: str) -> BoolArray:
    return frame[column].to_numpy(dtype=np.bool_, na_value=False)


def check_accounting(frame: pd.DataFrame) -> None:
    """Every row is exactly one of ok/error/incomplete, agrees with its ``ok`` flag, and appears
    once per (variant, stage, request_id); otherwise scheduled != ok + error + incomplete."""
    outcome = frame["outcome"]
    bad = ~outcome.isin(OUTCOMES)
    if bad.any():
        shown = outcome[bad].astype("object").fillna("<null>").value_counts().to_dict()
        first = frame.loc[bad].iloc[0]
        raise AccountingError(
            f"{int(bad.sum())} record(s) have no valid outcome (ok, error or incomplete): {shown}; "
            f"first: variant {first['variant']} stage {first['stage']} request {first['request_id']}"
        )
    flag = frame["ok"]
    known = flag.notna().to_numpy()
    flag_ok = flag.to_numpy(dtype=np.bool_, na_value=False)
    is_ok = (outcome == OUTCOME_OK).to_numpy()
    contradict = known & (flag_ok != is_ok)
    if contradict.any():
        raise AccountingError(
            f"{int(contradict.sum())} record(s) have ok={flag_ok[contradict][0]} but outcome "
            f"{outcome.to_numpy()[contradict][0]!r}; the load generator wrote inconsistent rows"
        )
    if _distinct_requests(frame) < len(frame):
        dup = frame.duplicated(["variant", "stage", "request_id"])
        first = frame.loc[dup].iloc[0]
        raise AccountingError(
            f"{int(dup.sum())} duplicate record(s) (same variant, stage and request_id), e.g. variant "
            f"{first['variant']} stage {first['stage']} request {first['request_id']}: a shard was "
            "probably written twice; scheduled would not equal ok + error + incomplete"
        )


def _distinct_requests(frame: pd.DataFrame) -> int:
    """Distinct (variant, stage, request_id) keys. Arrow's hashing is ~10x faster than pandas'
    duplicated() (which then finds the example), and a frame of one stage, as the analysis reads
    them, needs no grouping: the ids alone are counted, in C (analysis/_distinct.c, ~5x faster
    than Arrow's unique and ~10x than its count_distinct)."""
    if frame.empty:
        return 0
    stage, variant = frame["stage"].to_numpy(), frame["variant"]
    if stage.min() == stage.max() and bool((variant == variant.iat[0]).all()):
        return _distinct_strings(pa.array(frame["request_id"]))
    keys = pa.table({c: pa.array(frame[c]) for c in ("variant", "stage", "request_id")})
    distinct = keys.group_by(["variant", "stage"]).aggregate([("request_id", "count_distinct", pc.CountOptions("all"))])
    return sum(distinct.column("request_id_count_distinct").to_pylist())


def _distinct_strings(ids: pa.Array | pa.ChunkedArray) -> int:
    """Distinct values of a string column; a null counts once, as in Arrow's count_distinct."""
    one = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if one.null_count or one.type != pa.string():
        return len(pc.unique(one))  # large_string, or nulls: a bitmap the C count does not read
    _, offsets, data = one.buffers()
    return distinct_strings(offsets, data if data is not None else b"", one.offset, len(one))


# Above this many runs of consecutive rows, one vectorised index beats a Python loop over slices.
_MAX_RUNS = 4096


@dataclass(frozen=True)
class _ListChunk:
    offsets: npt.NDArray[np.int64]  # len + 1, into values
    values: npt.NDArray[np.floating]
    valid: BoolArray
    filled: BoolArray  # the row's offsets span at least one value
    filled_before: npt.NDArray[np.int64]  # len + 1: rows with values before each row

    @classmethod
    def of(cls, arr: pa.Array) -> _ListChunk:
        """Of an ``itl_s`` chunk: float32 bytes (records.SCHEMA), or lists of floats (hand-made frames)."""
        if pa.types.is_large_binary(arr.type) or pa.types.is_binary(arr.type):
            offsets = binary_offsets(arr) // ITL_DTYPE.itemsize
            data = arr.buffers()[2]
            values = np.frombuffer(data, dtype=ITL_DTYPE) if data is not None else np.empty(0, dtype=ITL_DTYPE)
        else:
            offsets = arr.offsets.to_numpy().astype(np.int64)
            values = arr.values.to_numpy(zero_copy_only=False)
        filled = offsets[1:] > offsets[:-1]
        return cls(
            offsets=offsets,
            values=values,
            valid=arr.is_valid().to_numpy(zero_copy_only=False),
            filled=filled,
            filled_before=np.concatenate(([0], np.cumsum(filled))),
        )

    def runs(self, rows: IntArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """(starts, ends) in ``values`` of the lists of ``rows`` (sorted, chunk-local), as few
        slices as possible: two rows are in one slice when no row between them holds values
        (errors and cut-off requests in between hold none, so a stage's answers in one shard
        are one slice or a few). None when they would be more than _MAX_RUNS slices."""
        rows = rows[self.valid[rows] & self.filled[rows]]
        if rows.size == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        between = self.filled_before[rows[1:]] - self.filled_before[rows[:-1] + 1]
        breaks = np.nonzero(between > 0)[0]
        if breaks.size >= _MAX_RUNS:
            return None
        firsts = np.concatenate(([rows[0]], rows[breaks + 1]))
        lasts = np.concatenate((rows[breaks], [rows[-1]]))
        return self.offsets[firsts], self.offsets[lasts + 1]

    def take(self, rows: IntArray) -> npt.NDArray[np.floating]:
        """The list elements of ``rows`` (sorted, chunk-local), concatenated, for selections of
        many small pieces (runs() is None): one vectorised index, no Python per row."""
        rows = rows[self.valid[rows]]
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        first_out = np.cumsum(lengths) - lengths
        index = np.repeat(starts - first_out, lengths) + np.arange(int(lengths.sum()))
        return self.values[index]


class _ItlSource:
    """The per-request ``itl_s`` lists of chosen rows, end to end.

    Works on the Arrow buffers (offsets + float32 values) directly: no per-request Python objects,
    no copy of the lists that are not selected, and none of those that are when they are a few
    slices of the values (each shard's answers): a stage's tens of millions of gaps stay where
    Arrow read them.
    """

    def __init__(self, column: pd.Series) -> None:
        if isinstance(column.dtype, pd.ArrowDtype):
            arrays = column.array.__arrow_array__().chunks  # the backing ChunkedArray, no copy
        else:  # lists or arrays as Python objects (hand-made frames in tests)
            arrays = [pa.array(column.to_numpy(dtype=np.object_), type=pa.list_(pa.float64()), from_pandas=True)]
        self._chunks = [_ListChunk.of(arr) for arr in arrays]
        self._bounds = np.cumsum([0] + [len(c.valid) for c in self._chunks])

    def values(self, rows: IntArray) -> Concatenation:
        rows = np.sort(rows)
        chunk_of = np.searchsorted(self._bounds, rows, side="right") - 1
        pieces: list[npt.NDArray[np.floating]] = []
        for i, chunk in enumerate(self._chunks):
            mine = rows[chunk_of == i] - self._bounds[i]
            if mine.size == 0:
                continue
            runs = chunk.runs(mine)
            if runs is None:
                pieces.append(chunk.take(mine))
            else:
                pieces += [chunk.values[s:e] for s, e in zip(*runs, strict=True) if e > s]
        return Concatenation(pieces)  # views: nothing copied


@dataclass(frozen=True)
class _Columns:
    """Numpy views of the frame, made once (per-stage work only indexes them)."""

    t_scheduled: FloatArray
    t_end: FloatArray
    ttft: FloatArray
    ttfo: FloatArray  # NaN where no answer token came (or the writer predates t_first_answer)
    e2e: FloatArray
    prompt: FloatArray
    output: FloatArray
    itl_max: FloatArray
    is_ok: BoolArray
    is_error: BoolArray
    is_incomplete: BoolArray
    client_bound: BoolArray
    error: npt.NDArray[np.object_]
    # None when no record has a bucket (no workload.buckets, or a writer before them): no per-bucket work
    bucket: npt.NDArray[np.object_] | None
    image_size: npt.NDArray[np.object_] | None  # likewise, workload.images.sizes' names
    image_bytes: FloatArray | None  # None when no request carried images
    itl: _ItlSource

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Columns:
        outcome = frame["outcome"]
        t_scheduled = _floats(frame, "t_scheduled")
        unplaced = ~np.isfinite(t_scheduled)
        if unplaced.any():
            first = frame.loc[unplaced].iloc[0]
            raise AccountingError(
                f"{int(unplaced.sum())} record(s) have no valid t_scheduled (e.g. variant {first['variant']} stage "
                f"{first['stage']} request {first['request_id']}): no stage window can place them"
            )
        t_sent = _floats(frame, "t_sent")
        ttft = _floats(frame, "ttft_s")
        e2e = _floats(frame, "e2e_s")
        # Durations come from the recorded columns; where a writer left them empty, the
        # timestamps they are defined by (docs/metrics.md) fill in.
        ttft = np.where(np.isnan(ttft), _floats(frame, "t_first_token") - t_sent, ttft)
        e2e = np.where(np.isnan(e2e), _floats(frame, "t_last_token") - t_sent, e2e)
        ttfo = _floats(frame, "t_first_answer") - t_sent
        t_end = _floats(frame, "t_end")
        prompt, output = _floats(frame, "prompt_tokens"), _floats(frame, "output_tokens")
        itl_max = _floats(frame, "itl_max_s")
        is_ok = (outcome == OUTCOME_OK).to_numpy()
        is_error = (outcome == OUTCOME_ERROR).to_numpy()
        error = frame["error"].to_numpy(dtype=np.object_)
        invalid = invalid_values(ttft=ttft, ttfo=ttfo, e2e=e2e, since_scheduled=t_end - t_scheduled, itl_max=itl_max,
                                 prompt_tokens=prompt, output_tokens=output)  # fmt: skip
        bad = is_ok & (invalid != None)  # noqa: E711 - elementwise over an object array
        if bad.any():
            # An ok request with an impossible value is an error with a reason, never a sample.
            is_ok, is_error, error = is_ok & ~bad, is_error | bad, np.where(bad, invalid, error)
        return cls(
            t_scheduled=t_scheduled,
            t_end=t_end,
            ttft=ttft,
            ttfo=ttfo,
            e2e=e2e,
            prompt=prompt,
            output=output,
            itl_max=itl_max,
            is_ok=is_ok,
            is_error=is_error,
            is_incomplete=(outcome == OUTCOME_INCOMPLETE).to_numpy(),
            client_bound=_bools(frame, "client_bound"),
            error=error,
            bucket=_labels(frame, "bucket"),
            image_size=_labels(frame, "image_size"),
            image_bytes=_floats(frame, "image_bytes") if frame["image_bytes"].notna().any() else None,
            itl=_ItlSource(frame["itl_s"]),
        )


def tpot(e2e: FloatArray, ttft: FloatArray, output_tokens: FloatArray) -> FloatArray:
    """(E2E − TTFT) / (output_tokens − 1); NaN where output_tokens ≤ 1 (no decode gap exists)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(output_tokens > 1, (e2e - ttft) / (output_tokens - 1), np.nan)


def ntpot(e2e: FloatArray, output_tokens: FloatArray) -> FloatArray:
    """E2E / output_tokens (GuideLLM's "TPOT"); NaN where no token came back."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(output_tokens >= 1, e2e / output_tokens, np.nan)


def infer_stage(variant: str, stage: int, rows: IntArray, cols: _Columns, frame: pd.DataFrame) -> StageInfo:
    """A StageInfo for records whose stages/<variant>.json entry is missing (a cut-short run):
    the window is the span of requests flagged ``in_steady_window`` (else of all requests)."""
    sched = cols.t_scheduled[rows]
    steady = frame["in_steady_window"].to_numpy(dtype=np.bool_, na_value=False)[rows]
    window = sched[steady] if steady.any() else sched
    first = frame.iloc[int(rows[0])]
    tc, tr = first["target_concurrency"], first["target_rate"]
    return StageInfo(
        variant=variant,
        stage=stage,
        target_concurrency=None if pd.isna(tc) else float(tc),
        target_rate=None if pd.isna(tr) else float(tr),
        start=float(np.nanmin(sched)),
        steady_start=float(np.nanmin(window)),
        # the last request's own slot is inside the window, so the window ends just after it
        steady_end=float(np.nanmax(window)) + 1e-6,
        end=float(np.nanmax(cols.t_end[rows])) if np.isfinite(cols.t_end[rows]).any() else float(np.nanmax(sched)),
        workers=max(1, int(frame["worker"].iloc[rows].nunique())),
        note="stage info missing; steady window inferred from the records",
    )


def _per_request_slo_value(metric: str, rows: IntArray, cols: _Columns) -> FloatArray:
    if metric == "ttft":
        return cols.ttft[rows]
    if metric == "tpot":
        return tpot(cols.e2e[rows], cols.ttft[rows], cols.output[rows])
    if metric == "itl":
        return cols.itl_max[rows]  # a request meets an ITL bound when its largest gap does
    return cols.e2e[rows]


def _meeting_every_bound(ok: IntArray, cols: _Columns, rule: SloRule) -> int:
    """Ok requests within every latency bound of the SLO (goodput's numerator). A request with no
    value for a metric (TPOT of a 1-token answer, no ITL gap) has nothing that could violate it."""
    within = np.ones(ok.size, dtype=np.bool_)
    for b in rule.slo.bounds:
        within &= ~(_per_request_slo_value(b.metric, ok, cols) > b.max_seconds)
    return int(within.sum())


def _stage(info: StageInfo, rows: IntArray, cols: _Columns, rule: SloRule) -> StageMetrics:
    is_ok, is_err, is_inc = cols.is_ok[rows], cols.is_error[rows], cols.is_incomplete[rows]
    n_ok, n_err, n_inc = int(is_ok.sum()), int(is_err.sum()), int(is_inc.sum())
    if n_ok + n_err + n_inc != rows.size:  # check_accounting makes this impossible; keep the guard
        raise AccountingError(
            f"variant {info.variant} stage {info.stage}: scheduled {rows.size} != ok {n_ok} + error {n_err} "
            f"+ incomplete {n_inc}"
        )
    reasons = cols.error[rows][is_err]
    by_reason = pd.Series(np.where(pd.isna(reasons), "unknown", reasons)).value_counts()
    errors_by_reason = {str(k): int(v) for k, v in by_reason.items()}

    sched = cols.t_scheduled[rows]
    in_window = (sched >= info.steady_start) & (sched < info.steady_end)
    win = rows[in_window]
    win_ok = win[cols.is_ok[win]]
    steady_n = int(win.size)
    steady_ok = int(win_ok.size)
    steady_err = int(cols.is_error[win].sum())
    steady_inc = int(cols.is_incomplete[win].sum())
    window_s = info.steady_seconds
    per_s = 1.0 / window_s if window_s > 0 else math.nan

    ttft, e2e, out = cols.ttft[win_ok], cols.e2e[win_ok], cols.output[win_ok]
    tpots = tpot(e2e, ttft, out)
    itl = cols.itl.values(win_ok)
    latency = {
        "ttft": summarize(ttft),
        "ttfo": summarize(cols.ttfo[win_ok]),
        "tpot": summarize(tpots),
        "itl": summarize(itl),
        "e2e": summarize(e2e),
        "ntpot": summarize(ntpot(e2e, out)),
        "e2eFromScheduled": summarize(cols.t_end[win_ok] - cols.t_scheduled[win_ok]),
    }

    per_request = _per_request_slo_value(rule.slo.latency.metric, win_ok, cols)
    counts = StageCounts(scheduled=steady_n, ok=steady_ok, errors=steady_err, incomplete=steady_inc)
    by_metric: dict[str, npt.NDArray[np.floating]] = {"ttft": ttft, "tpot": tpots, "e2e": e2e}
    if any(b.metric == "itl" for b in rule.slo.bounds):  # every gap in one array only for a bound on them
        by_metric["itl"] = itl.array()
    verdict = judge(by_metric, counts, rule, interrupted=info.interrupted)
    meeting = _meeting_every_bound(win_ok, cols, rule)

    client_share = float(cols.client_bound[win].mean()) if steady_n else 0.0
    notes = [info.note] if info.note else []
    invalid = {k: v for k, v in errors_by_reason.items() if k.startswith(INVALID_RECORD)}
    if invalid:
        shown = ", ".join(f"{n} {k.split(':', 1)[1]}" for k, n in sorted(invalid.items()))
        notes.append(f"{sum(invalid.values())} ok record(s) had impossible values and count as errors ({shown})")
    return StageMetrics(
        variant=info.variant,
        stage=info.stage,
        target=info.target_concurrency if info.target_concurrency is not None else info.target_rate,
        target_kind="concurrency" if info.target_concurrency is not None or info.target_rate is None else "rate",
        window_start=info.steady_start,
        window_end=info.steady_end,
        requests=int(rows.size),
        ok=n_ok,
        errors=n_err,
        incomplete=n_inc,
        errors_by_reason=errors_by_reason,
        steady_requests=steady_n,
        steady_ok=steady_ok,
        steady_errors=steady_err,
        steady_incomplete=steady_inc,
        error_rate=verdict.error_rate,
        throughput_rpm=steady_n * per_s * 60,
        output_tokens_per_s=float(np.nansum(out)) * per_s,
        input_tokens_per_s=float(np.nansum(cols.prompt[win_ok])) * per_s,
        mean_prompt_tokens=float(np.nanmean(cols.prompt[win_ok])) if steady_ok else math.nan,
        mean_output_tokens=float(np.nanmean(out)) if steady_ok else math.nan,
        goodput_rps=meeting * per_s,
        slo_attainment=meeting / steady_n if steady_n else math.nan,
        latency=latency,
        slo_value=verdict.value,
        slo_ci=verdict.ci,
        outcome=verdict.outcome,
        verdict=verdict.kind,
        meets_slo=verdict.passed,
        failures=verdict.reasons,
        client_bound=info.client_bound or client_share > 0,
        client_bound_share=client_share,
        client=info.client,
        buckets=_groups(win, cols.bucket, cols, rule, window_s),
        image_sizes=_groups(win, cols.image_size, cols, rule, window_s),
        mean_image_bytes=_mean_image_bytes(win_ok, cols),
        bounds=verdict.bounds,
        notes=tuple(notes),
        # one per ok request of the window (ITL, one per token, would not scale); "at": seconds into
        # the window it was scheduled, "slo": its value of the SLO's metric (latency over time)
        samples={
            "ttft": ttft,
            "tpot": tpots,
            "e2e": e2e,
            "at": cols.t_scheduled[win_ok] - info.steady_start,
            "slo": per_request,
        },
    )


def _labels(frame: pd.DataFrame, column: str) -> npt.NDArray[np.object_] | None:
    """A label column (bucket, image size) as objects; None when no record has one: no per-group work."""
    return frame[column].to_numpy(dtype=np.object_) if frame[column].notna().any() else None


def _mean_image_bytes(rows: IntArray, cols: _Columns) -> float:
    if cols.image_bytes is None or rows.size == 0:
        return math.nan
    return float(np.nanmean(cols.image_bytes[rows]))


def _groups(
    win: IntArray, labels: npt.NDArray[np.object_] | None, cols: _Columns, rule: SloRule, window_s: float
) -> tuple[BucketMetrics, ...]:
    """Each group's requests of the steady window (a prompt-length bucket, an image size), judged
    by the same SLO as the stage (its minimum sample scaled to the group's share of the window)."""
    if labels is None:
        return ()
    names = labels[win]
    present = sorted({str(n) for n in names if isinstance(n, str)})
    per_s = 1.0 / window_s if window_s > 0 else math.nan
    metrics = {b.metric for b in rule.slo.bounds}
    out = []
    for name in present:
        rows = win[names == name]
        ok = rows[cols.is_ok[rows]]
        counts = StageCounts(
            scheduled=int(rows.size),
            ok=int(ok.size),
            errors=int(cols.is_error[rows].sum()),
            incomplete=int(cols.is_incomplete[rows].sum()),
        )
        share_rule = SloRule(rule.slo, max(1, math.ceil(rule.min_requests * rows.size / win.size)))
        ttft, e2e, out_tokens = cols.ttft[ok], cols.e2e[ok], cols.output[ok]
        tpots = tpot(e2e, ttft, out_tokens)
        by_metric = {"ttft": ttft, "tpot": tpots, "e2e": e2e}
        if "itl" in metrics:  # every gap of every request: gathered only when a bound needs them
            by_metric["itl"] = cols.itl.values(ok).array()
        verdict = judge(by_metric, counts, share_rule)
        latency = {"ttft": summarize(ttft), "tpot": summarize(tpots), "e2e": summarize(e2e)}
        out.append(
            BucketMetrics(
                name=name,
                steady_requests=counts.scheduled,
                steady_ok=counts.ok,
                error_rate=verdict.error_rate,
                throughput_rpm=rows.size * per_s * 60,
                mean_prompt_tokens=float(np.nanmean(cols.prompt[ok])) if ok.size else math.nan,
                mean_output_tokens=float(np.nanmean(out_tokens)) if ok.size else math.nan,
                goodput_rps=_meeting_every_bound(ok, cols, rule) * per_s,
                latency=latency,
                slo_value=verdict.value,
                slo_ci=verdict.ci,
                outcome=verdict.outcome,
                failures=verdict.reasons,
                mean_image_bytes=_mean_image_bytes(ok, cols),
            )
        )
    return tuple(out)


def stage_metrics(frame: pd.DataFrame, stages: Sequence[StageInfo], rule: SloRule) -> list[StageMetrics]:
    """Metrics of every (variant, stage) in ``stages`` or in the records, sorted by both.

    Raises AccountingError when the records do not add up.
    """
    check_accounting(frame)
    cols = _Columns.of(frame)
    groups: dict[tuple[str, int], IntArray] = {
        (str(k[0]), int(k[1])): np.asarray(v, dtype=np.intp)
        for k, v in cast(
            "dict[tuple[Any, Any], Any]", frame.groupby(["variant", "stage"], sort=False, observed=True).indices
        ).items()
    }
    infos = {(s.variant, s.stage): s for s in stages}
    out = []
    for key in sorted(set(groups) | set(infos)):
        rows = groups.get(key, np.empty(0, dtype=np.intp))
        info = infos.get(key) or infer_stage(key[0], key[1], rows, cols, frame)
        out.append(_stage(info, rows, cols, rule))
    return out
