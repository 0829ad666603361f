"""`fmbench-k8s analyze` on damaged run directories: a clear one-line error naming the file, exit 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import REPO

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "fmbench-k8s")
STAGE = {"variant": "g5-sim", "stage": 0, "target_concurrency": 8, "start": 1, "steady_start": 2, "steady_end": 3,
         "end": 4, "workers": 1}  # fmt: skip


def _analyze(run: Path) -> subprocess.CompletedProcess[str]:
    argv = [CLI, "analyze", "--spec", str(REPO / "examples/quickstart.yaml"), "--records", str(run), "--no-plots"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _run_dir(tmp_path: Path, stages: object, parquet: bytes | None = None) -> Path:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "g5-sim.json").write_text(json.dumps(stages))
    if parquet is not None:
        (tmp_path / "records" / "g5-sim").mkdir(parents=True)
        (tmp_path / "records" / "g5-sim" / "000-w0-00000.parquet").write_bytes(parquet)
    return tmp_path


def test_a_corrupt_records_shard_is_named(tmp_path: Path) -> None:
    done = _analyze(_run_dir(tmp_path, [STAGE], b"not parquet"))
    assert done.returncode == 1
    assert done.stderr.startswith("analyze: ") and "000-w0-00000.parquet" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("stages", "expected"),
    [([{"variant": "g5-sim"}], "stage: Field required"), ("[not json", "is not a valid stage list")],
)
def test_a_malformed_stages_file_is_named_with_the_field(tmp_path: Path, stages: object, expected: str) -> None:
    run = _run_dir(tmp_path, [])
    (run / "stages" / "g5-sim.json").write_text(stages if isinstance(stages, str) else json.dumps(stages))
    done = _analyze(run)
    assert done.returncode == 1
    assert "stages/g5-sim.json is not a valid stage list" in done.stderr and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ---- price tables (--price-table: the shipped table's format, a user's own rates) ----------------

TABLE = REPO / "analysis/data/prices.yaml"


def _table(tmp_path: Path, edit: object) -> Path:
    import yaml

    doc = yaml.safe_load(TABLE.read_text())
    if callable(edit):
        edit(doc)
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(edit, str) else edit)
    return path


def _set(path: str, value: object) -> object:
    def edit(doc: dict[str, object]) -> None:
        *parents, last = (k.replace("\\.", ".") for k in re.split(r"(?<!\\)\.", path))
        node: object = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
        node[int(last) if isinstance(node, list) else last] = value  # type: ignore[index]

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("schemaVersion: [1", "cannot read a YAML price table"),
        ("- a list", "a price table is a mapping"),
        (_set("instances.0.usdPerHour.g5\\.2xlarge", "cheap"), "instances.0.usdPerHour"),
        (_set("currency", "EUR"), "currency: Input should be 'USD'"),
        (_set("instances.0.source", "nowhere"), "undeclared sources: ['nowhere']"),
        (_set("baseRegion", "mars-1"), "baseRegion 'mars-1' is not under regions"),
        (_set("capacityTypes.spot.discount", 1.5), "capacityTypes.spot.discount: Input should be less than 1"),
        (_set("regions.us-east-1.colour", "red"), "regions.us-east-1.colour: Extra inputs are not permitted"),
    ],
    ids=["not-yaml", "not-a-mapping", "price-not-a-number", "currency", "source", "base-region", "discount", "typo"],
)
def test_a_malformed_price_table_names_the_field_and_nothing_runs(tmp_path: Path, edit: object, expected: str) -> None:
    table = _table(tmp_path, edit)
    for argv in (
        ["analyze", "--spec", str(REPO / "examples/quickstart.yaml"), "--records", str(tmp_path / "none")],
        ["run", str(REPO / "examples/quickstart.yaml"), "--output", str(tmp_path / "out")],
    ):
        done = subprocess.run([CLI, *argv, "--price-table", str(table)], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 1, done.stderr  # invalid input
        assert done.stderr.startswith(f"--price-table: {table}: ") and expected in done.stderr, done.stderr
    assert not (tmp_path / "out").exists(), "a bad table is refused before the run starts"


def test_a_users_price_table_decides_the_cost(tmp_path: Path) -> None:
    from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
    from fmbench_k8s.storage import LocalStorage

    variants = [SyntheticVariant(n, levels=(4, 8), ttft_s=0.05, itl_s=0.01, prompt_tokens=256, output_tokens=32)
                for n in ("g5-sim", "g6e-sim", "inf2-sim")]  # fmt: skip
    table, stages = synthesize_table(variants, stage_s=30)
    run = tmp_path / "run"
    write_run(LocalStorage(run), table, stages)
    shipped = _analyze_with(run)
    negotiated = _analyze_with(run, _table(tmp_path, _set("instances.0.usdPerHour.inf2\\.8xlarge", 0.01)))
    assert shipped["recommendation"]["variant"] != "inf2-sim"
    assert negotiated["recommendation"]["variant"] == "inf2-sim"
    assert negotiated["recommendation"]["costPerHour"] < shipped["recommendation"]["costPerHour"]


def _analyze_with(run: Path, table: Path | None = None) -> dict[str, Any]:
    argv = [CLI, "analyze", "--spec", str(REPO / "examples/quickstart.yaml"), "--records", str(run), "--no-plots",
            *(["--price-table", str(table)] if table else [])]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    report: dict[str, Any] = json.loads((run / "report.json").read_text())
    assert done.returncode == 0
    return report


def test_a_run_directory_is_all_analyze_needs(tmp_path: Path) -> None:
    """The run directory holds the spec it ran: `analyze RUN` re-analyzes it with nothing else."""
    from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
    from fmbench_k8s.storage import open_storage

    run = tmp_path / "run"
    table, stages = synthesize_table([SyntheticVariant("g5-sim", levels=(1, 2))], warmup_s=2, stage_s=30, drain_s=2)
    write_run(open_storage(str(run)), table, stages)
    argv = [CLI, "analyze", str(run), "--no-plots"]
    missing = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 1
    expected = f"{run}: spec.yaml: not found; give a run directory (it holds spec.yaml) or --spec FILE\n"
    assert missing.stderr == expected
    (run / "spec.yaml").write_text((REPO / "examples/quickstart.yaml").read_text())
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "result per variant" in done.stdout and "report: " in done.stdout  # a table for people ...
    machine = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=120, check=False)
    assert json.loads(machine.stdout)["benchmark"] == "quickstart"  # ... and JSON alone for scripts
    report = json.loads((run / "report.json").read_text())
    assert report["benchmark"] == "quickstart"  # the spec it found; its other variants have no records
    by_name = {v["name"]: v for v in report["variants"]}
    assert len(by_name["g5-sim"]["stages"]) == 2 and by_name["g6e-sim"]["stages"] == []
    both = subprocess.run([*argv, "--records", str(run)], capture_output=True, text=True, timeout=120, check=False)
    assert both.returncode == 2 and both.stderr.startswith("analyze: give the run directory once")
