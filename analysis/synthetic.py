"""Synthetic per-request records from a simple latency model, for tests and benchmarks.

Closed loop at concurrency c: TTFT = ttft_s × f, each decode gap = itl_s × f, with
f = 1 + slowdown × (c − 1) and lognormal jitter; E2E = TTFT + the sum of the gaps. A stage holds
``requests_per_stage`` requests (default: what c users would complete, c / E2E per second)
scheduled uniformly over warm-up + steady window. Errors are drawn with ``error_rate``; requests
that would end after the drain are incomplete. Nothing here claims to model a real server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmbench_k8s.analysis.frames import to_frame
from fmbench_k8s.contract.records import ITL_TYPE, PARQUET_WRITE, SCHEMA, StageInfo, itl_column, records_key, stages_key
from fmbench_k8s.storage import Storage

_ERROR_REASONS = ("http_429", "timeout", "http_500")


@dataclass(frozen=True)
class SyntheticBucket:
    """A prompt-length bucket of synthetic requests: its share, prompt length and TTFT factor."""

    name: str
    share: float
    prompt_tokens: int
    ttft_factor: float = 1.0


@dataclass(frozen=True)
class SyntheticVariant:
    name: str
    levels: tuple[float, ...] = (1, 2, 4, 8)
    ttft_s: float = 0.2
    itl_s: float = 0.02
    slowdown: float = 0.1
    error_rate: float = 0.0
    prompt_tokens: int = 512
    output_tokens: int = 128
    jitter: float = 0.1  # lognormal sigma per request (and a quarter of it per gap)
    requests_per_stage: int | None = None
    buckets: tuple[SyntheticBucket, ...] = ()  # none: no bucket column


def _stage_table(
    v: SyntheticVariant, info: StageInfo, *, n: int, workers: int, rng: np.random.Generator, itl_lists: bool
) -> pa.Table:
    stage = info.stage
    level = info.target_concurrency or 1.0
    f = 1 + v.slowdown * (level - 1)
    out = np.maximum(1, np.rint(rng.normal(v.output_tokens, v.output_tokens * 0.1, n))).astype(np.int64)
    prompt = np.maximum(1, np.rint(rng.normal(v.prompt_tokens, v.prompt_tokens * 0.1, n))).astype(np.int64)
    ttft = v.ttft_s * f * rng.lognormal(0, v.jitter, n)
    gap = v.itl_s * f * rng.lognormal(0, v.jitter, n)
    bucket = pa.nulls(n, pa.string())
    if v.buckets:  # drawn after everything else, so a run without buckets is the same as before
        which = rng.choice(len(v.buckets), n, p=[b.share for b in v.buckets])
        prompt = np.array([b.prompt_tokens for b in v.buckets], dtype=np.int64)[which]
        ttft = ttft * np.array([b.ttft_factor for b in v.buckets])[which]
        bucket = pa.array(np.array([b.name for b in v.buckets])[which])
    gaps_per = out - 1
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(gaps_per, out=offsets[1:])
    per_gap = np.repeat(gap, gaps_per).astype(np.float32) * rng.lognormal(0, v.jitter / 4, int(offsets[-1])).astype(
        np.float32
    )
    # per-request sums of the gaps (reduceat mishandles empty segments, so use cumulative sums)
    csum = np.concatenate(([0.0], np.cumsum(per_gap, dtype=np.float64)))
    decode = csum[offsets[1:]] - csum[offsets[:-1]]
    e2e = ttft + decode

    sched = np.sort(rng.uniform(info.start, info.steady_end, n))
    sent = sched + 0.001
    end = sent + e2e
    is_error = rng.random(n) < v.error_rate
    is_incomplete = ~is_error & (end > info.end)
    is_ok = ~is_error & ~is_incomplete
    outcome = np.where(is_ok, "ok", np.where(is_error, "error", "incomplete"))
    reason = pa.array(np.array(_ERROR_REASONS)[rng.integers(0, len(_ERROR_REASONS), n)], mask=~is_error)

    def ok_only(values: np.ndarray) -> pa.Array:
        return pa.array(values, mask=~is_ok)

    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, decode / np.maximum(gaps_per, 1), np.nan)
    if itl_lists:
        lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(per_gap), mask=pa.array(~is_ok))
        itl = itl_column(lists)
        # reduceat over the non-empty lists only: each then ends where the next non-empty one starts
        has_gaps = gaps_per > 0
        itl_max = np.full(n, np.nan)
        if per_gap.size:
            itl_max[has_gaps] = np.maximum.reduceat(per_gap, offsets[:-1][has_gaps])
    else:
        itl = pa.nulls(n, ITL_TYPE)
        itl_max = np.full(n, np.nan)
    ids = pa.array([f"{v.name}-{stage}-{i}" for i in range(n)])
    worker_names = np.array([f"w{w}" for w in range(workers)])[np.arange(n) % workers]
    columns = {
        "variant": pa.array(np.full(n, v.name)),
        "stage": pa.array(np.full(n, stage, dtype=np.int32)),
        "target_concurrency": pa.array(np.full(n, level, dtype=np.float64)),
        "target_rate": pa.nulls(n, pa.float64()),
        "request_id": ids,
        "worker": pa.array(worker_names),
        "t_scheduled": pa.array(sched),
        "t_sent": pa.array(sent),
        "t_first_byte": ok_only(sent + ttft * 0.9),
        "t_first_token": ok_only(sent + ttft),
        "t_first_answer": ok_only(sent + ttft),  # no reasoning: the first token is the answer's
        "t_last_token": ok_only(end),
        "t_end": ok_only(end),
        "ttft_s": ok_only(ttft),
        "e2e_s": ok_only(e2e),
        "tpot_s": ok_only(tpot),
        "itl_mean_s": ok_only(tpot),
        "itl_max_s": ok_only(itl_max),
        "itl_s": itl,
        "prompt_tokens": pa.array(prompt),
        "bucket": bucket,
        "images": pa.nulls(n, pa.int32()),
        "image_bytes": pa.nulls(n, pa.int64()),
        "image_pixels": pa.nulls(n, pa.int64()),
        "image_size": pa.nulls(n, pa.string()),
        "turn": pa.nulls(n, pa.int32()),
        "output_tokens": ok_only(out),
        "reasoning_tokens": pa.nulls(n, pa.int64()),
        "token_source": pa.array(np.full(n, "server")),
        "outcome": pa.array(outcome),
        "ok": pa.array(is_ok),
        "error": reason,
        "http_status": pa.array(np.where(is_ok, 200, np.where(is_error, 429, 0)).astype(np.int32), mask=is_incomplete),
        "in_steady_window": pa.array((sched >= info.steady_start) & (sched < info.steady_end)),
        "client_bound": pa.array(np.zeros(n, dtype=bool)),
        "prompt": pa.nulls(n, pa.string()),
        "answer": pa.nulls(n, pa.string()),
        "reference": pa.nulls(n, pa.list_(pa.string())),
    }
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in SCHEMA], schema=SCHEMA)


def synthesize_table(
    variants: Sequence[SyntheticVariant],
    *,
    start: float = 1_700_000_000.0,
    warmup_s: float = 10.0,
    stage_s: float = 60.0,
    drain_s: float = 10.0,
    workers: int = 2,
    seed: int = 0,
    itl_lists: bool = True,
) -> tuple[pa.Table, list[StageInfo]]:
    """Records (an Arrow table with SCHEMA) and the StageInfo of every variant's stages."""
    rng = np.random.default_rng(seed)
    tables, infos = [], []
    for v in variants:
        t = start
        for stage, level in enumerate(v.levels):
            info = StageInfo(
                variant=v.name, stage=stage, target_concurrency=level, start=t, steady_start=t + warmup_s,
                steady_end=t + warmup_s + stage_s, end=t + warmup_s + stage_s + drain_s, workers=workers,
            )  # fmt: skip
            mean_e2e = v.ttft_s * (1 + v.slowdown * (level - 1)) + (v.output_tokens - 1) * v.itl_s * (
                1 + v.slowdown * (level - 1)
            )
            n = v.requests_per_stage or max(1, round(level * (warmup_s + stage_s) / mean_e2e))
            tables.append(_stage_table(v, info, n=n, workers=workers, rng=rng, itl_lists=itl_lists))
            infos.append(info)
            t = info.end + 1
    return (pa.concat_tables(tables) if tables else SCHEMA.empty_table()), infos


def synthesize(variants: Sequence[SyntheticVariant], **kwargs: object) -> tuple[pd.DataFrame, list[StageInfo]]:
    """Like synthesize_table, as the analysis DataFrame."""
    table, infos = synthesize_table(variants, **kwargs)  # type: ignore[arg-type]
    return to_frame(table), infos


def write_run(storage: Storage, table: pa.Table, stages: Sequence[StageInfo]) -> list[str]:
    """Write records as the load generator does (one shard per variant, stage and worker) plus
    stages/<variant>.json; returns the keys written."""
    keys = []
    frame = table.select(["variant", "stage", "worker"]).to_pandas()
    for (variant, stage, worker), rows in frame.groupby(["variant", "stage", "worker"], sort=True).indices.items():
        key = records_key(str(variant), int(stage), str(worker), 0)
        sink = pa.BufferOutputStream()
        pq.write_table(table.take(pa.array(rows)), sink, **PARQUET_WRITE)
        storage.write_bytes(key, sink.getvalue().to_pybytes())
        keys.append(key)
    for variant in sorted({s.variant for s in stages}):
        doc = [s.model_dump(mode="json") for s in stages if s.variant == variant]
        storage.write_bytes(stages_key(variant), json.dumps(doc, indent=1).encode())
        keys.append(stages_key(variant))
    return keys
