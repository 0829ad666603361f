"""The Benchmark object and loading it from YAML with errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench_k8s.api.base import DNS_1035_LABEL, PATTERN_HELP
from fmbench_k8s.api.documents import MAX_BYTES, DocumentError, parse_documents
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.api.status import BenchmarkStatus

GROUP = "fmbench.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Benchmark"
PLURAL = "benchmarks"


class Metadata(BaseModel):
    """The part of ObjectMeta that offline validation checks; the rest passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # A DNS-1035 label: the name prefixes Services and labels (fmbench.io/benchmark), which allow
    # no more; the CRD checks the same (api/crd.py), so a bad name is refused at `kubectl apply`.
    name: str = Field(min_length=1, max_length=63, pattern=DNS_1035_LABEL)
    namespace: str | None = None


class Benchmark(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    api_version: Literal["fmbench.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Benchmark"]
    metadata: Metadata
    spec: BenchmarkSpec
    status: BenchmarkStatus | None = None


class SpecError(Exception):
    """A Benchmark document that is not valid; ``problems`` are ``field.path: message`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


_FIELD_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:/[A-Za-z][A-Za-z0-9]*)?): (.*)$", re.S)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_errors(err: ValidationError) -> list[str]:
    """One ``path: message`` line per problem, with the path in the YAML's own spelling.

    Cross-field validators prefix their message with the field they are about (``engine: ...``);
    that name is moved into the path so every line names the exact field to fix.
    """
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        m = _FIELD_PREFIX.match(msg)
        if e["type"] == "value_error" and m:
            loc, msg = (*loc, m.group(1)), m.group(2)
        if e["type"] == "string_pattern_mismatch":
            pattern = str((e.get("ctx") or {}).get("pattern", ""))
            msg = f"must be {PATTERN_HELP[pattern]}, got {e['input']!r}" if pattern in PATTERN_HELP else msg
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against docs/api.md"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{_path(loc)}: {msg}")
    return lines


def parse_benchmark(doc: Any, source: str = "<input>") -> Benchmark:
    """Validate one decoded YAML document."""
    if not isinstance(doc, dict):
        raise SpecError(source, ["document: expected a mapping with apiVersion, kind, metadata and spec"])
    try:
        return Benchmark.model_validate(doc)
    except ValidationError as err:
        raise SpecError(source, format_errors(err)) from None


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a spec file, refused in one line when it is hostile (api/documents.py)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise SpecError(str(path), [f"file: cannot read ({err.strerror})"]) from None
    try:
        return parse_documents(data, str(path))
    except DocumentError as err:
        raise SpecError(str(path), [str(err)]) from None


def is_benchmark_document(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(GROUP)


def load_benchmark(path: Path) -> Benchmark:
    """The single Benchmark in ``path`` (what ``fmbench-k8s run`` takes)."""
    docs = [d for d in load_documents(path) if is_benchmark_document(d)]
    if len(docs) != 1:
        raise SpecError(str(path), [f"document: expected exactly one Benchmark, found {len(docs)}"])
    return parse_benchmark(docs[0], str(path))


def to_manifest(bench: Benchmark) -> dict[str, Any]:
    """The object as YAML/JSON for the API server (camelCase, defaults filled, no status)."""
    return bench.model_dump(by_alias=True, exclude_none=True, exclude={"status"}, mode="json")
