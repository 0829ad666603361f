"""The master's progress events: one JSON object per line, on stdout or appended to a file.

Every event has ``event`` and ``variant``; see docs/loadgen.md for the fields of each kind
(listening, ready, stage_start, progress, stage_end, search, done, error).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class ProgressSink:
    def __init__(self, variant: str, path: Path | None = None) -> None:
        self.variant = variant
        self._file: TextIO = path.open("a", buffering=1) if path is not None else sys.stdout

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "variant": self.variant, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(_clean(record), separators=(",", ":")) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()
