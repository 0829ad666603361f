"""`fmbench-k8s run` as a user runs it, for the integration tests of whole local benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CLI = str(Path(sys.executable).parent / "fmbench-k8s")


def benchmark(name: str, variants: list[dict[str, Any]], workload: dict[str, Any], slo: dict[str, Any],
              load: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A Benchmark document (spec fields in their YAML spelling)."""
    spec = {"variants": variants, "workload": workload, "slo": slo, "load": load}
    return {"apiVersion": "fmbench.io/v1alpha1", "kind": "Benchmark", "metadata": {"name": name}, "spec": spec}


def run_benchmark(spec: Path | dict[str, Any], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a spec file or document to the end (plots off); the finished process and its run folder."""
    if isinstance(spec, dict):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
    else:
        path = spec
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    done = subprocess.run([CLI, "run", str(path), "--output-dir", str(tmp_path / "out"), "--no-plots"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (tmp_path / "out" / "local" / name).iterdir()
    return done, run
