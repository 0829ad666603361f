"""The command lines contract/engines.py generates for SGLang, parsed by SGLang's own launcher
parser (``prepare_server_args``, what ``python3 -m sglang.launch_server`` calls). SGLang has no CPU
build to serve with; its parser runs without a GPU. tests/engines/sglang.sh installs it (cached)."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from fmbench_k8s.analysis.prometheus import SERVER_NAMES
from fmbench_k8s.contract.engines import local_argv, server_args

HERE = Path(__file__).resolve().parent

PARSE = """
import json, sys
from sglang.srt.server_args import prepare_server_args
out = []
for argv in json.loads(sys.argv[1]):
    a = prepare_server_args(argv)
    out.append([a.model_path, a.host, a.port, a.tp_size, a.revision, a.enable_metrics])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def python() -> str:
    """SGLang's venv's Python (installed once, cached)."""
    setup = subprocess.run(["bash", str(HERE / "sglang.sh")], capture_output=True, text=True, timeout=3600, check=False)
    assert setup.returncode == 0, f"tests/engines/sglang.sh failed:\n{setup.stdout[-2000:]}\n{setup.stderr[-3000:]}"
    return setup.stdout.strip().splitlines()[-1].split()[1]  # "sglang: PYTHON"


def test_the_generated_sglang_arguments_are_what_sglang_accepts(python: str, tmp_path: Path) -> None:
    lines = [
        server_args("sglang", "org/model", 30000),
        server_args("sglang", "org/model", 30000, tensor_parallel=4, revision="abc123"),
    ]
    launcher = ["python3", "-m", "sglang.launch_server"]
    assert all(line[:3] == launcher for line in lines)
    # `fmbench-k8s run --engine-python sglang=PYTHON`: the same line, this machine's Python, loopback
    local = local_argv("sglang", python, "org/model", 30000, tensor_parallel=2)
    assert local[:3] == [python, "-m", "sglang.launch_server"]
    lines.append([*launcher, *local[3:]])
    # cwd: not the checkout, whose operator/ folder would shadow the standard library's operator
    done = subprocess.run(
        [python, "-c", PARSE, json.dumps([line[3:] for line in lines])],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == [
        ["org/model", "0.0.0.0", 30000, 1, None, True],
        ["org/model", "0.0.0.0", 30000, 4, "abc123", True],
        ["org/model", "127.0.0.1", 30000, 2, None, True],
    ]
    # and the parser is strict: a flag it does not know fails, so the check above can fail
    bad = subprocess.run(
        [python, "-c", PARSE, json.dumps([[*lines[0][3:], "--no-such-flag"]])],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0 and "--no-such-flag" in bad.stderr


def test_the_sglang_metric_names_the_report_reads_are_sglangs_own(python: str) -> None:
    """Every sglang:* series analysis/prometheus.py reads is one SGLang's metrics collector defines
    (its source, read as code: building the collectors needs GPU kernels)."""
    (source,) = Path(python).parent.parent.glob(
        "lib/python3*/site-packages/sglang/srt/observability/metrics_collector.py"
    )
    defined = {
        kw.value.value
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
    }
    read = {n for n in SERVER_NAMES if n.startswith("sglang:")}
    assert len(read) >= 8 and len(defined) > 50, (read, len(defined))
    assert read <= defined, sorted(read - defined)
