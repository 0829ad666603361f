"""The record writer loses no row when flushes overlap, fail or are cut off.

In the worker the periodic flusher and a stage's end flush run as greenlets and may overlap; an
upload may fail (S3 down) or be cut off. These tests make the same overlaps happen
deterministically: a storage that starts another flush from inside an upload, one that raises,
and real threads for the last flush waiting on an upload in flight.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fmbench_k8s.contract.records import SCHEMA
from fmbench_k8s.loadgen.writer import RecordWriter
from fmbench_k8s.storage import LocalStorage


def _row(stage: int, i: int) -> dict[str, Any]:
    return {**dict.fromkeys(SCHEMA.names), "variant": "v", "stage": stage, "request_id": f"r{i}", "worker": "w0"}


def _stored_ids(root: Path) -> list[str]:
    store = LocalStorage(root)
    ids: list[str] = []
    for key in store.list_keys("records/"):
        ids += pq.read_table(io.BytesIO(store.read_bytes(key))).column("request_id").to_pylist()
    return ids


@dataclass(frozen=True)
class HookedStorage(LocalStorage):
    """A local directory whose next ``write_bytes`` first runs the first of ``hooks`` with the key."""

    hooks: list[Callable[[str], None]] = field(default_factory=list)

    def write_bytes(self, key: str, data: bytes) -> str:
        if self.hooks:
            self.hooks.pop(0)(key)
        return super().write_bytes(key, data)


def test_a_flush_overlapping_an_upload_of_the_same_stage_writes_a_new_part(tmp_path: Path) -> None:
    """Before the fix both took part 0, and the later upload replaced the earlier one's rows."""
    storage = HookedStorage(tmp_path)
    writer = RecordWriter(storage, "v", "w0")
    for i in range(3):
        writer.add(0, _row(0, i))

    def stage_end_flush(key: str) -> None:  # the stage ends while the periodic upload runs
        writer.add(0, _row(0, 3))
        assert writer.flush(0)

    storage.hooks.append(stage_end_flush)
    assert writer.flush()
    assert sorted(_stored_ids(tmp_path)) == ["r0", "r1", "r2", "r3"]
    assert len(set(writer.keys)) == 2 and writer.written == {0: 4}


class Killed(BaseException):
    """Like gevent's GreenletExit: not an Exception, so no ``except Exception`` handles it."""


def test_an_upload_cut_off_or_failed_keeps_its_rows_in_order_for_the_next_flush(tmp_path: Path) -> None:
    storage = HookedStorage(tmp_path)
    writer = RecordWriter(storage, "v", "w0")
    for i in range(2):
        writer.add(0, _row(0, i))

    def killed(key: str) -> None:
        writer.add(0, _row(0, 2))  # arrives while the doomed upload runs
        raise Killed

    storage.hooks.append(killed)
    with pytest.raises(Killed):
        writer.flush()
    assert writer.pending(0) == 3

    def refused(key: str) -> None:
        raise ConnectionError("S3 refused the connection")

    storage.hooks.append(refused)
    assert writer.flush() is False
    assert writer.pending(0) == 3
    assert writer.flush() is True
    assert _stored_ids(tmp_path) == ["r0", "r1", "r2"] and writer.pending() == 0


def test_the_last_flush_waits_for_the_upload_in_flight_and_writes_its_rows_if_it_fails(tmp_path: Path) -> None:
    storage = HookedStorage(tmp_path)
    writer = RecordWriter(storage, "v", "w0")
    for i in range(2):
        writer.add(0, _row(0, i))
    uploading, release = threading.Event(), threading.Event()

    def slow_then_failing(key: str) -> None:
        uploading.set()
        release.wait(10)
        raise ConnectionError("S3 refused the connection")

    storage.hooks.append(slow_then_failing)
    periodic = threading.Thread(target=writer.flush)
    periodic.start()
    assert uploading.wait(10)
    writer.add(0, _row(0, 2))
    last = threading.Thread(target=lambda: writer.flush(wait=True))
    last.start()
    last.join(0.3)
    assert last.is_alive(), "the last flush must not finish while an upload is in flight"
    release.set()
    periodic.join(10)
    last.join(10)
    assert not last.is_alive()
    assert sorted(_stored_ids(tmp_path)) == ["r0", "r1", "r2"] and writer.pending() == 0
