"""`fmbench-k8s analyze` on damaged run directories: a clear one-line error naming the file, exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
