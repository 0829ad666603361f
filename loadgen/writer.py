"""Per-request records to storage: Parquet parts of records.SCHEMA, flushed every few seconds.

Rows are buffered per stage and written as a new part (``records_key(variant, stage, worker,
part)``) every ``interval`` seconds and at the end of each stage, so a worker that dies loses at
most the last interval. A failed write keeps the rows buffered for the next attempt: during the run
the next flush (the stage must not wait for storage; its results reach the master by message),
and at the end a flush that waits out a storage outage (``storage.Patient``).

Flushes may overlap (the periodic flusher and a stage's end): each takes its part number when it
takes its rows, so two uploads never share a key, and the last flush first waits for the uploads
in flight, whose rows come back to the buffer if they fail.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fmbench_k8s.contract.records import PARQUET_WRITE, SCHEMA, records_key
from fmbench_k8s.loadgen.httpclient import gevent_patched
from fmbench_k8s.storage import Storage, patient

log = logging.getLogger("fmbench.loadgen")
FLUSH_INTERVAL_S = 2.0


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (request.to_row's, whose keys are SCHEMA's names in order) to an Arrow table, column
    by column: transposed by zip, 4× faster than a lookup per field and row, several times
    faster than from_pylist."""
    if rows and list(rows[0]) != SCHEMA.names:
        raise ValueError(f"a record row's fields are not records.SCHEMA's: {list(rows[0])}")
    columns = zip(*map(dict.values, rows), strict=True) if rows else ([] for _ in SCHEMA)
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_WRITE)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def encode_parquet(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes of ``rows``. Under gevent the encoding (C++, without the GIL) runs on a
    native thread, so the streams this worker is timing are not held up for milliseconds."""
    table = to_table(rows)
    if gevent_patched():
        import gevent

        data: bytes = gevent.get_hub().threadpool.apply(_parquet_bytes, (table,))
        return data
    return _parquet_bytes(table)


class RecordWriter:
    def __init__(self, storage: Storage, variant: str, worker: str) -> None:
        self.storage = storage
        self._patient = patient(storage)
        self.variant = variant
        self.worker = worker
        self._rows: dict[int, list[dict[str, Any]]] = {}
        self._parts: dict[int, int] = {}
        self.written: dict[int, int] = {}  # rows stored per stage
        self.keys: list[str] = []
        self._uploads = 0  # in flight; a gevent Condition in the (monkey-patched) worker
        self._idle = threading.Condition()

    def warm_up(self, row: dict[str, Any]) -> None:
        """Encode one row and throw it away: pyarrow's first Parquet write initialises for ~0.2 s,
        which must not happen mid-stage (it would stall every stream of this worker)."""
        encode_parquet([row])

    def add(self, stage: int, row: dict[str, Any]) -> None:
        self._rows.setdefault(stage, []).append(row)

    def pending(self, stage: int | None = None) -> int:
        if stage is not None:
            return len(self._rows.get(stage, ()))
        return sum(len(r) for r in self._rows.values())

    def flush(self, stage: int | None = None, *, wait: bool = False) -> bool:
        """Write buffered rows (of one stage, or all) as new parts; False if a write failed.

        ``wait``: the last flush: wait for the uploads in flight, then wait out a storage outage."""
        if wait:
            with self._idle:
                self._idle.wait_for(lambda: self._uploads == 0)
        storage = self._patient if wait else self.storage
        ok = True
        for s in [stage] if stage is not None else sorted(self._rows):
            rows = self._rows.get(s)
            if not rows:
                continue
            part = self._parts.get(s, 0)
            self._parts[s] = part + 1  # taken now: an overlapping flush of this stage gets the next part
            key = records_key(self.variant, s, self.worker, part)
            self._rows[s] = []  # rows added while the upload runs go to the next part
            try:
                self._upload(storage, s, key, rows)
            except Exception as exc:
                log.error("writing %s failed (%s); keeping %d rows for the next flush", key, exc, len(rows))
                ok = False
                continue
            self.written[s] = self.written.get(s, 0) + len(rows)
            self.keys.append(key)
        return ok

    def _upload(self, storage: Storage, stage: int, key: str, rows: list[dict[str, Any]]) -> None:
        """Write one part; on any failure (or the greenlet being killed) the rows go back to the
        front of their stage's buffer, so they are written, in order, by a later flush."""
        with self._idle:
            self._uploads += 1
        try:
            storage.write_bytes(key, encode_parquet(rows))
        except BaseException:
            self._rows[stage] = rows + self._rows.get(stage, [])
            raise
        finally:
            with self._idle:
                self._uploads -= 1
                self._idle.notify_all()
