"""Record shards (Parquet) → one pandas DataFrame with the columns of ``records.SCHEMA``.

The ``itl_s`` list column stays Arrow-backed (``pd.ArrowDtype``): a million requests carry
hundreds of millions of inter-token gaps, and turning each list into a Python object would cost
more memory and time than the whole rest of the analysis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmbench_k8s.contract.records import REQUIRED_COLUMNS, SCHEMA
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
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _types(arrow_type: pa.DataType) -> Any:
    if pa.types.is_list(arrow_type):
        return pd.ArrowDtype(arrow_type)
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()  # nullable: a missing flag is not False
    return None


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The analysis DataFrame of a conformed table (numeric columns as numpy, nulls as NaN)."""
    frame: pd.DataFrame = conform(table).to_pandas(types_mapper=_types)
    return frame


def read_parquet_shards(blobs: Iterable[tuple[str, bytes]]) -> pa.Table:
    """Concatenate (name, Parquet bytes) shards into one conformed table (empty if there are none)."""
    tables = [conform(pq.read_table(pa.py_buffer(blob)), name) for name, blob in blobs]
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_shards(storage: Storage, keys: Sequence[str]) -> pa.Table:
    """Like read_parquet_shards, from ``keys`` of ``storage``.

    Local files are read by Arrow directly: going through Python bytes would touch every byte
    twice more, and fresh memory (page faults) is what dominates reading on a small machine.
    """
    if isinstance(storage, LocalStorage):
        tables = [conform(pq.read_table(storage.root / key), storage.uri(key)) for key in keys]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return read_parquet_shards((storage.uri(key), storage.read_bytes(key)) for key in keys)


def empty_frame() -> pd.DataFrame:
    return to_frame(SCHEMA.empty_table())
