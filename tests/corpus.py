"""The invalid-Benchmark corpus (tests/data/invalid_benchmarks.yaml) and the repo's sample YAMLs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "invalid_benchmarks.yaml"


@dataclass(frozen=True)
class InvalidCase:
    case: str
    field: str
    doc: dict[str, Any]


def _walk(doc: Any, path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    return node, parts[-1]


def invalid_cases() -> list[InvalidCase]:
    data = yaml.safe_load(CORPUS.read_text())
    cases = []
    for entry in data["cases"]:
        doc = copy.deepcopy(data["base"])
        doc["metadata"]["name"] = f"corpus-{entry['case']}"
        for path, value in entry.get("set", {}).items():
            parent, key = _walk(doc, path)
            parent[key] = value
        for path in entry.get("delete", []):
            parent, key = _walk(doc, path)
            del parent[key]
        cases.append(InvalidCase(entry["case"], entry["field"], doc))
    return cases


def repo_benchmark_files() -> list[Path]:
    """Every YAML in the repository that holds an fmbench.io Benchmark (tests' own data excluded)."""
    found = []
    skip = {".venv", ".git", "node_modules", ".cluster", "results", "build"}
    for path in sorted(REPO.rglob("*.y*ml")):
        rel = path.relative_to(REPO)
        if skip.intersection(rel.parts) or rel.parts[:2] == ("tests", "data") or "templates" in rel.parts:
            continue  # Helm templates are not YAML until rendered
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Benchmark":
                found.append(path)
                break
    return found
