"""The command lines contract/engines.py generates for SGLang, parsed by SGLang's own launcher
parser (``prepare_server_args``, what ``python3 -m sglang.launch_server`` calls). SGLang has no CPU
build to serve with; its parser runs without a GPU. tests/engines/sglang.sh installs it (cached)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fmbench_k8s.contract.engines import server_args

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


def test_the_generated_sglang_arguments_are_what_sglang_accepts(tmp_path: Path) -> None:
    setup = subprocess.run(["bash", str(HERE / "sglang.sh")], capture_output=True, text=True, timeout=3600, check=False)
    assert setup.returncode == 0, f"tests/engines/sglang.sh failed:\n{setup.stdout[-2000:]}\n{setup.stderr[-3000:]}"
    python = setup.stdout.strip().splitlines()[-1].split()[1]  # "sglang: PYTHON"
    lines = [
        server_args("sglang", "org/model", 30000),
        server_args("sglang", "org/model", 30000, tensor_parallel=4, revision="abc123"),
    ]
    launcher = ["python3", "-m", "sglang.launch_server"]
    assert all(line[:3] == launcher for line in lines)
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
    ]
    # and the parser is strict: a flag it does not know fails, so the check above can fail
    bad = subprocess.run(
        [python, "-c", PARSE, json.dumps([[*lines[0][3:], "--no-such-flag"]])],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0 and "--no-such-flag" in bad.stderr
