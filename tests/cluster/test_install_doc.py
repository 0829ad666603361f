"""docs/install.md's local-cluster walkthrough, run exactly as written: `make cluster`, Helm, a
sample Benchmark to Ready with a recommendation, `make cluster-down`.

It runs in a copy of the checkout (the tracked files, with this checkout's .venv linked in), so a
`make cluster` of the developer's own is never touched, and the commands' `$PWD/.cluster` is the
copy's.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster.node import host_firewall
from tests.corpus import REPO

pytestmark = pytest.mark.cluster

DOC = REPO / "docs" / "install.md"
MARKER = "<!-- the block below is run as written by tests/cluster/test_install_doc.py -->"


def walkthrough() -> list[str]:
    text = DOC.read_text()
    block = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)\n```", text, re.S)
    assert block, f"{DOC}: the tested block after {MARKER!r} is missing"
    return block.group(1).splitlines()


def _checkout_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(src.readlink())
        elif src.is_file():
            target.write_bytes(src.read_bytes())
            target.chmod(src.stat().st_mode)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def test_the_local_cluster_walkthrough_reaches_ready_with_a_recommendation(tmp_path: Path) -> None:
    commands = walkthrough()
    assert commands[0] == "make cluster" and commands[-1] == "make cluster-down", commands
    repo = _checkout_copy(tmp_path / "checkout")
    firewall = host_firewall()
    script = "set -euo pipefail\n" + "\n".join(commands[:-1]) + "\n"
    try:
        proc = subprocess.run(
            ["bash", "-c", script], cwd=repo, capture_output=True, text=True, timeout=1800, check=False
        )
    finally:
        down = subprocess.run(
            ["make", "cluster-down"], cwd=repo, capture_output=True, text=True, timeout=300, check=False
        )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("{"), f"the last command printed no recommendation:\n{proc.stdout[-3000:]}"
    recommendation = json.loads(last)
    assert recommendation["instances"] >= 1 and recommendation["variant"] in ("g5-sim", "g6e-sim"), recommendation
    assert recommendation["costPer1kRequests"] > 0
    assert down.returncode == 0, down.stdout + down.stderr
    assert host_firewall() == firewall
