"""The distinct count of request ids in C (analysis/_distinct.c) is Arrow's count_distinct, on
every shape an id column takes, so the check that no request was recorded twice stays exact."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fmbench_k8s.analysis._distinct import distinct_strings
from fmbench_k8s.analysis.metrics import _distinct_strings


def _ids(n: int, repeats: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = [f"w{rng.randrange(4)}-{i}" for i in range(n)]
    return ids + [rng.choice(ids) for _ in range(repeats)] if ids else ids


def _arrow(values: list[str | None], typ: pa.DataType | None = None) -> pa.Array:
    return pa.array(values, type=typ or pa.string())


CASES = {
    "none": [],
    "one": ["a"],
    "all distinct": _ids(20_000, 0, 1),
    "some twice": _ids(20_000, 37, 2),
    "all the same": ["same"] * 1000,
    "empty strings": ["", "", "a", ""],
    "only empty": ["", ""],
    "a trailing NUL is another string": ["a", "a\0", "a\0\0", "a"],
    "long, one prefix": ["x" * 40 + str(i % 300) for i in range(2000)],
    "multibyte": ["stage-é-1", "stage-é-1", "stage-ë-1", "幾-1"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_count_is_arrows(name: str) -> None:
    arr = _arrow(list(CASES[name]))
    want = pc.count_distinct(arr, mode="all").as_py()
    assert _distinct_strings(arr) == want
    if len(arr) > 3:  # a slice reads the parent's buffers from its offset
        part = arr.slice(1, len(arr) - 2)
        assert _distinct_strings(part) == pc.count_distinct(part, mode="all").as_py()


def test_nulls_chunks_and_large_strings_count_as_arrow_counts_them() -> None:
    with_nulls = _arrow(["a", None, "b", None, "a"])
    assert _distinct_strings(with_nulls) == 3  # a null counts once
    chunked = pa.chunked_array([_arrow(["a", "b"]), _arrow(["b", "c"])])
    assert _distinct_strings(chunked) == 3
    assert _distinct_strings(_arrow(["a", "b", "a"], pa.large_string())) == 2


def test_the_c_count_refuses_offsets_it_cannot_trust() -> None:
    arr = _arrow(["ab", "cd"])
    _, offsets, data = arr.buffers()
    assert distinct_strings(offsets, data, 0, 2) == 2
    with pytest.raises(ValueError, match="shorter than start"):
        distinct_strings(offsets, data, 1, 2)
    falling = pa.py_buffer(pa.array([0, 3, 1], type=pa.int32()).buffers()[1])
    with pytest.raises(ValueError, match="not ascending"):
        distinct_strings(falling, data, 0, 2)
    beyond = pa.py_buffer(pa.array([0, 2, 9], type=pa.int32()).buffers()[1])
    with pytest.raises(ValueError, match="outside the data buffer"):
        distinct_strings(beyond, data, 0, 2)
