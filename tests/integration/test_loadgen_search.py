"""The SLO search finds the simulator's capacity: with max_num_seqs = 8 a ninth concurrent request
queues for a slot, so its TTFT grows from the prefill time (20 ms) to a large share of a whole
request (~115 ms). Under a TTFT p95 bound of 40 ms the answer is exactly c* = 8; the 20 ms between
the prefill and the bound absorb a loaded machine's scheduling noise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_loadgen_support import Sim, assert_accounting, loadgen, start_simulator, write_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = start_simulator("--max-num-seqs", "8", "--prefill-base-s", "0.02", "--prefill-s-per-token", "0",
                        "--decode-base-s", "0.005", "--batch-slowdown", "0")  # fmt: skip
    yield s
    s.stop()


# a 40 ms TTFT bound: the other test worker's load pushed every level's p95 over it (2026-12-03)
@pytest.mark.alone
def test_search_finds_the_capacity_limit_under_a_ttft_slo(sim: Sim, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        variants=[{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 50}, "outputTokens": {"mean": 20}},
        slo={"latency": {"metric": "ttft", "percentile": 95, "maxSeconds": 0.04}, "maxErrorRate": 0.01},
        load={
            "mode": "search",
            "concurrency": {"min": 4, "max": 16},
            "tolerance": 0.01,
            "stageDuration": "1500ms",
            "minRequestsPerStage": 20,
        },
    )
    with loadgen(tmp_path, spec, "sim", endpoint_url=sim.url + "/v1") as run:
        run.start()
        assert run.wait(timeout=150) == 0
        assert_accounting(run)
        search = run.search()
        stages = run.stages()
    levels = [t["level"] for t in search["levels"]]
    assert search["c_star"] == 8, search
    assert levels == [4, 8, 16, 12, 10, 9]
    assert [t["passed"] for t in search["levels"]] == [True, True, False, False, False, False]
    assert all("p95 ttft" in (t["reason"] or "") for t in search["levels"] if not t["passed"])
    assert [s["target_concurrency"] for s in stages] == levels
    done = next(e for e in run.events if e["event"] == "done")
    assert done["c_star"] == 8 and done["exit_code"] == 0
    searches = [e for e in run.events if e["event"] == "search"]
    assert [e["decision"] for e in searches] == ["higher", "higher", "lower", "lower", "lower", "stop"]
