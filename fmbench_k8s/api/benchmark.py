"""The Benchmark object and loading it from YAML with errors that name the field."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench_k8s.api.base import DNS_1035_LABEL
from fmbench_k8s.api.documents import MAX_BYTES, DocumentError, parse_documents
from fmbench_k8s.api.messages import did_you_mean, explain
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


def format_errors(err: ValidationError) -> list[str]:
    """One ``path: message`` line per problem, with the path in the YAML's own spelling and a
    message that says what to write (api/messages.py)."""
    return [": ".join(explain(e, Benchmark)) for e in err.errors()]


def parse_benchmark(doc: Any, source: str = "<input>") -> Benchmark:
    """Validate one decoded YAML document."""
    if not isinstance(doc, dict):
        raise SpecError(source, ["document: expected a mapping with apiVersion, kind, metadata and spec"])
    try:
        return Benchmark.model_validate(doc)
    except ValidationError as err:
        raise SpecError(source, format_errors(err)) from None


STDIN = Path("-")


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a spec file (``-``: standard input), refused in one line when it is
    hostile (api/documents.py)."""
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(MAX_BYTES + 1)
        elif path.is_dir():
            raise SpecError(str(path), ["directory: holds no *.yaml or *.yml file"])
        else:
            with path.open("rb") as f:
                data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise SpecError(str(path), [f"file: cannot read ({err.strerror})"]) from None
    try:
        return parse_documents(data, str(path))
    except DocumentError as err:
        raise SpecError(str(path), [str(err)]) from None


def mentions_benchmark(doc: Any) -> bool:
    """A document meant as a Benchmark, typos included (an fmbench.io apiVersion or kind Benchmark)."""
    return isinstance(doc, dict) and (str(doc.get("apiVersion", "")).startswith(GROUP) or doc.get("kind") == KIND)


def is_benchmark_document(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(GROUP)


def benchmark_documents(path: Path) -> list[Any]:
    """The Benchmark documents of a file; SpecError saying what the file holds instead when none."""
    return _benchmarks_in(load_documents(path), str(path))


def _benchmarks_in(docs: list[Any], source: str) -> list[Any]:
    found = [d for d in docs if is_benchmark_document(d)]
    if found:
        return found
    for doc in docs:  # the nearest miss first: a misspelt kind or apiVersion
        if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(GROUP):
            hint = did_you_mean(doc.get("kind"), [KIND]) or f"; write kind: {KIND}"
            raise SpecError(source, [f"kind: {doc.get('kind')!r} is not a kind of {API_VERSION}{hint}"])
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            raise SpecError(source, [f"apiVersion: {doc.get('apiVersion')!r}; write apiVersion: {API_VERSION}"])
    kinds = sorted({str(d.get("kind")) for d in docs if isinstance(d, dict) and d.get("kind")})
    held = f" (it holds {', '.join(kinds)})" if kinds else " (it holds no YAML mapping)"
    raise SpecError(source, [f"document: no {API_VERSION} {KIND} in the file{held}"])


def _single(docs: list[Any], source: str) -> Benchmark:
    if len(docs) != 1:
        names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in docs)
        raise SpecError(
            source,
            [f"document: a run takes one Benchmark and the file has {len(docs)} ({names}); give each its own file"],
        )
    return parse_benchmark(docs[0], source)


def load_benchmark(path: Path) -> Benchmark:
    """The single Benchmark in ``path`` (what ``fmbench-k8s run`` takes)."""
    return _single(benchmark_documents(path), str(path))


def benchmark_from_bytes(data: bytes, source: str) -> Benchmark:
    """The single Benchmark of a spec file's contents (a run's own spec.yaml, local or in S3)."""
    try:
        docs = parse_documents(data, source)
    except DocumentError as err:
        raise SpecError(source, [str(err)]) from None
    return _single(_benchmarks_in(docs, source), source)


def to_manifest(bench: Benchmark) -> dict[str, Any]:
    """The object as YAML/JSON for the API server (camelCase, defaults filled, no status)."""
    return bench.model_dump(by_alias=True, exclude_none=True, exclude={"status"}, mode="json")
