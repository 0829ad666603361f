"""Record shards (Parquet) → one pandas DataFrame with the columns of ``records.SCHEMA``.

The ``itl_s`` column (gaps as float32 bytes) stays Arrow-backed (``pd.ArrowDtype``): a million requests carry
hundreds of millions of inter-token gaps, and turning each value into a Python object would cost
more memory and time than the whole rest of the analysis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmbench_k8s.contract.records import ITL_DTYPE, REQUIRED_COLUMNS, SCHEMA, binary_offsets, itl_column
from fmbench_k8s.storage import LocalStorage, Storage


def conform(table: pa.Table, source: str = "a record shard") -> pa.Table:
    """``table`` with exactly SCHEMA's columns, in order: missing optional ones null, others cast.

    Shards written by an older or newer load generator still load; unknown columns are dropped.
    A shard without one of REQUIRED_COLUMNS is refused (ValueError naming ``source``).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: column(s) {', '.join(missing)} missing; records without them cannot be counted")
    columns = []
    for field in SCHEMA:
        if field.name == "itl_s" and field.name in table.column_names:
            columns.append(_gaps(table.column(field.name), source))
        elif field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _gaps(column: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    try:
        gaps = itl_column(column)
    except (ValueError, pa.ArrowException) as err:
        raise ValueError(f"{source}: {err}") from None
    for chunk in gaps.chunks:
        lengths = np.diff(binary_offsets(chunk))
        if (lengths % ITL_DTYPE.itemsize).any():
            raise ValueError(
                f"{source}: an itl_s value of {int(lengths[lengths % ITL_DTYPE.itemsize != 0][0])} bytes is not "
                "float32 gaps (4 bytes each); the shard is damaged or not written by the load generator"
            )
    return gaps


def _types(arrow_type: pa.DataType) -> Any:
    if pa.types.is_list(arrow_type) or pa.types.is_large_binary(arrow_type):
        return pd.ArrowDtype(arrow_type)
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()  # nullable: a missing flag is not False
    return None


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The analysis DataFrame of a conformed table (numeric columns as numpy, nulls as NaN).

    ``request_id`` stays Arrow-backed too: only the duplicate check reads all of them, and it
    hashes Arrow's buffers; half a million Python strings a stage would cost more than the check."""
    conformed = conform(table)
    frame: pd.DataFrame = conformed.drop_columns(["request_id"]).to_pandas(types_mapper=_types)
    ids = pd.arrays.ArrowExtensionArray(conformed.column("request_id"))
    frame.insert(conformed.column_names.index("request_id"), "request_id", pd.Series(ids, index=frame.index))
    return frame


# Columns no metric reads (docs/metrics.md): left undecoded in the shards, null in the frame.
UNREAD: Final = frozenset({
    "t_first_byte", "tpot_s", "itl_mean_s", "images", "image_pixels", "turn", "reasoning_tokens",
    "token_source", "http_status",
})  # fmt: skip
# The texts, read only to score accuracy (spec.evaluation).
TEXTS: Final = frozenset({"prompt", "answer", "reference"})


def _read(source: Any, name: str, skip: frozenset[str]) -> pa.Table:
    try:
        shard = pq.ParquetFile(source)
        table = shard.read(columns=[c for c in shard.schema_arrow.names if c not in skip])
    except (pa.ArrowException, OSError) as err:  # a damaged shard: say which
        raise ValueError(f"{name}: {err}") from None
    return conform(table, name)


def read_parquet_shards(blobs: Iterable[tuple[str, bytes]], skip: frozenset[str] = frozenset()) -> pa.Table:
    """Concatenate (name, Parquet bytes) shards into one conformed table (empty if there are none);
    the columns in ``skip`` are not read (null)."""
    tables = [_read(pa.py_buffer(blob), name, skip) for name, blob in blobs]
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_shards(storage: Storage, keys: Sequence[str], skip: frozenset[str] = frozenset()) -> pa.Table:
    """Like read_parquet_shards, from ``keys`` of ``storage``.

    Local files are read by Arrow directly: going through Python bytes would touch every byte
    twice more, and fresh memory (page faults) is what dominates reading on a small machine.
    """
    if isinstance(storage, LocalStorage):
        tables = [_read(storage.root / key, storage.uri(key), skip) for key in keys]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return read_parquet_shards(((storage.uri(key), storage.read_bytes(key)) for key in keys), skip)


def empty_frame() -> pd.DataFrame:
    return to_frame(SCHEMA.empty_table())
