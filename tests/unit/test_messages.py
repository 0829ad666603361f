"""Each common mistake gets one line that names the field and says what to write instead
(api/messages.py), the same from `validate` and `run`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmbench_k8s.api import SpecError, parse_benchmark
from fmbench_k8s.cli import main
from tests.corpus import REPO

BASE = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())

MISTAKES: list[tuple[str, Any, str]] = [
    ("spec.slo.latency.maxSeconds", "500ms", "spec.slo.latency.maxSeconds: a number of seconds: write 0.5 for 500ms"),
    ("spec.workload.requestsPerMinute", "1m", "spec.workload.requestsPerMinute: a plain number, not a duration"),
    ("spec.workload.requestsPerMinute", "fast", "spec.workload.requestsPerMinute: must be a number, got 'fast'"),
    ("spec.load.concurrency", [8], "spec.load.concurrency: write a mapping: {levels: [1, 2, 4]} (run these) or"),
    ("spec.workload.promptTokens", 256, "spec.workload.promptTokens: write a mapping: {mean: 256}"),
    ("spec.load.stageDuration", 5, "spec.load.stageDuration: a duration needs a unit: write 5s (or ms, m, h)"),
    ("spec.load.warmup", "30 seconds", "spec.load.warmup: invalid duration '30 seconds': use a number with a unit"),
    ("spec.variants.0.engine", "vlm", "spec.variants[0].engine: must be one of vllm, tgi, triton-trtllm"),
    ("spec.variants.0.engine", "vlm", "got 'vlm'; did you mean 'vllm'?"),
    (
        "spec.load.mode",
        "Search",
        "spec.load.mode: must be one of search, sweep, fixed, got 'Search'; did you mean 'search'?",
    ),
    ("spec.variants.0.engin", "simulator", "spec.variants[0].engin: unknown field; did you mean 'engine'?"),
    ("spec.workloads", {}, "spec.workloads: unknown field; did you mean 'workload'?"),
    ("spec.variants.0.name", "G5_sim", "spec.variants[0].name: must be lower-case letters, digits and '-'"),
    ("spec.variants.0.instanceType", "g5.2xlarg", "did you mean 'g5.2xlarge'?"),
    ("metadata.name", "1st", "metadata.name: must be lower-case letters, digits and '-', starting with a letter"),
]


def _edit(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(BASE)
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "expected"), MISTAKES, ids=[f"{p}={v!r}" for p, v, _ in MISTAKES])
def test_a_common_mistake_gets_the_fix(path: str, value: Any, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_benchmark(_edit(path, value))
    assert any(expected in line for line in caught.value.problems), caught.value.problems
    assert all("Input should be" not in line and "instance of" not in line for line in caught.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apiVersion: fmbench.io/v1alpha1\nkind: Benchmarks\n",
         "kind: 'Benchmarks' is not a kind of fmbench.io/v1alpha1; did you mean 'Benchmark'?"),
        ("apiVersion: fmbench/v1\nkind: Benchmark\n",
         "apiVersion: 'fmbench/v1'; write apiVersion: fmbench.io/v1alpha1"),
        ("", "document: no fmbench.io/v1alpha1 Benchmark in the file (it holds no YAML mapping)"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_file_without_a_benchmark_says_what_it_holds(
    text: str, expected: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    args = ["validate", str(path)] if command == "validate" else ["run", str(path), "--dry-run"]
    assert main(args) == 1  # invalid input, from either command
    assert capsys.readouterr().err.strip() == f"{path}: {expected}"


def test_two_benchmarks_are_valid_and_a_run_says_to_split_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = _edit("metadata.name", "second")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([BASE, second]))
    assert main(["validate", "--local", str(path)]) == 0
    assert "valid (2 Benchmarks; `run` takes one per file)" in capsys.readouterr().out
    assert main(["run", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    expected = "document: a run takes one Benchmark and the file has 2 (quickstart, second); give each its own file"
    assert err == f"{path}: {expected}"


def test_an_unpriced_region_is_said_before_the_run_not_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variant without a price still gets its latency measured, so this warns rather than refuses."""
    path = tmp_path / "mumbai.yaml"
    path.write_text(yaml.safe_dump(_edit("spec.analysis", {"pricing": {"region": "ap-south-1"}})))
    assert main(["validate", "--local", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith(f"{path}: warning: spec.variants[") for line in err)
    assert "no instance prices for region 'ap-south-1' in the price table" in err[0]
    assert main(["run", str(path), "--dry-run", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "warning: spec.variants[0] (g5-sim): no instance prices for region 'ap-south-1'" in out.replace("\n", " ")


def test_a_run_given_a_directory_says_it_takes_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path), "--dry-run"]) == 2
    assert (
        capsys.readouterr().err
        == f"run: {tmp_path} is a directory; a run takes one Benchmark file (validate -f takes directories)\n"
    )
