"""The command-line contract: usage errors, the start barrier, the progress file, the Locust users."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_loadgen_support import loadgen, start_simulator, write_spec

pytestmark = pytest.mark.integration

SIM_VARIANT = {"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}


def _loadgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fmbench_k8s.loadgen", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)  # fmt: skip


def test_usage_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", variants=[SIM_VARIANT], load={"mode": "fixed",
                      "concurrency": {"levels": [1]}})  # fmt: skip
    common = ["--spec", str(spec), "--output", str(tmp_path / "out"), "--run-id", "r"]
    no_url = _loadgen("master", *common, "--variant", "sim", cwd=tmp_path)
    assert no_url.returncode == 2 and "--endpoint-url is required for variant 'sim'" in no_url.stderr
    unknown = _loadgen("worker", *common, "--variant", "nope", "--master-host", "x", "--master-port", "1",
                       cwd=tmp_path)  # fmt: skip
    assert unknown.returncode == 2 and "--variant 'nope' is not in" in unknown.stderr
    (tmp_path / "bad.yaml").write_text(
        "kind: Benchmark\napiVersion: fmbench.io/v1alpha1\nmetadata: {name: x}\nspec: {}\n"
    )
    bad = _loadgen("master", "--spec", str(tmp_path / "bad.yaml"), "--variant", "v", "--output", "o", "--run-id", "r",
                   cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "spec.variants: required field is missing" in bad.stderr


def test_the_start_barrier_times_out_without_workers_and_progress_goes_to_a_file(tmp_path: Path) -> None:
    sim = start_simulator()
    try:
        spec = write_spec(tmp_path / "spec.yaml", variants=[SIM_VARIANT],
                          load={"mode": "fixed", "concurrency": {"levels": [1]}, "workers": 3})  # fmt: skip
        progress = tmp_path / "progress.jsonl"
        with loadgen(tmp_path, spec, "sim", endpoint_url=sim.url + "/v1") as run:
            run.start(workers=1, master_args=("--worker-timeout", "10", "--progress-file", str(progress)))
            assert run.wait(timeout=60) == 3
            assert run.master is not None
            # 10 s leaves a worker slow to import (on a loaded machine) the time to connect
            assert "only 1 of 3 workers connected within 10s" in run.master.stderr
            assert not run.events, "progress went to the file, not stdout"
    finally:
        sim.stop()
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [e["event"] for e in events] == ["listening", "warmup", "error", "done"]
    assert all(e["variant"] == "sim" for e in events) and events[-1]["exit_code"] == 3


def test_the_locust_user_classes_work_in_a_plain_locust_environment(tmp_path: Path) -> None:
    sim = start_simulator("--decode-base-s", "0.002", "--prefill-base-s", "0.002")
    script = textwrap.dedent(f"""
        from gevent import monkey; monkey.patch_all()
        import json, gevent
        from locust.env import Environment
        from fmbench_k8s.loadgen.users import OpenAIChatUser, TgiUser

        class Chat(OpenAIChatUser):
            host = "{sim.url}/v1"
            max_tokens = 4

        class Tgi(TgiUser):
            host = "{sim.url}"
            max_tokens = 4

        env = Environment(user_classes=[Chat, Tgi])
        runner = env.create_local_runner()
        runner.start(4, spawn_rate=100)
        gevent.sleep(1.0)
        runner.quit()
        print(json.dumps({{name: [e.num_requests, e.num_failures] for (name, _), e in env.stats.entries.items()}}))
    """)  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
        )
    finally:
        sim.stop()
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["openai-chat"][0] > 5 and stats["tgi"][0] > 5
    assert stats["openai-chat"][1] == 0 and stats["tgi"][1] == 0
