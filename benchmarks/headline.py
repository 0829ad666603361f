"""The benchmarks' headline ratios, gathered from one ``make bench`` run and printed together.

Each benchmark calls ``record(name, text)`` with its ratio against its target; ``make bench``
empties the directory first and runs this file last, so what it prints was measured in one run.

    .venv/bin/python benchmarks/headline.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path


def directory() -> Path:
    return Path(os.environ.get("FMBENCH_BENCH_DIR") or Path(tempfile.gettempdir()) / "fmbench-bench")


def record(name: str, text: str, met: bool | None) -> None:
    """Keep one headline: ``text`` states the ratio and the target; ``met`` None: not applicable."""
    path = directory()
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps({"name": name, "text": text, "met": met}))


def main() -> int:
    path = directory()
    found = sorted(path.glob("*.json")) if path.is_dir() else []
    print(f"\nHeadlines of this run ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}):")
    if not found:
        print(f"  none recorded in {path}")
        return 1
    for item in (json.loads(p.read_text()) for p in found):
        mark = {True: "met", False: "NOT met", None: "-"}[item["met"]]
        print(f"  {item['name']:<9} [{mark}] {item['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
