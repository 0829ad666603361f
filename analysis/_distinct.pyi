"""analysis/_distinct.c: the distinct count of an Arrow string array's values."""

from typing import Any

def distinct_strings(offsets: Any, data: Any, start: int, length: int, /) -> int: ...
