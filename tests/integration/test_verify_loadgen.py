"""The verify phase's load generator (docs/verify.md): ``--verify N`` runs the spec's stages at R
and R × stepAbove as the fleet ``<variant>-x<N>``, and its outcome line carries their verdicts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmbench_k8s.contract.verification import MasterOutcome
from tests.integration.test_loadgen_support import Sim, loadgen, start_simulator, write_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = start_simulator("--prefill-base-s", "0.01", "--prefill-s-per-token", "0", "--decode-base-s", "0.005")
    yield s
    s.stop()


def test_the_verification_offers_r_and_the_step_above_and_reports_their_verdicts(sim: Sim, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        variants=[{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 10}, "outputTokens": {"mean": 4}},
        load={"concurrency": {"min": 1, "max": 8}},  # the run's search: replaced by the verification
        verify={"window": "3s", "stepAbove": 2},
    )
    outcome = tmp_path / "outcome"
    with loadgen(tmp_path, spec, "sim", endpoint_url=sim.url + "/v1") as run:
        run.start(master_args=("--verify", "2", "--outcome-file", str(outcome)), worker_args=("--verify", "2"))
        assert run.wait(timeout=120) == 0, run.master.stderr if run.master else ""
    folder = Path(run.output)
    stages = json.loads((folder / "stages" / "sim-x2.json").read_text())
    assert [(s["variant"], s["target_rate"]) for s in stages] == [("sim-x2", 10.0), ("sim-x2", 20.0)]
    # the window, extended (up to 3×) until it holds the requests a p95 interval needs (load.minRequestsPerStage)
    assert all(3.0 <= s["steady_end"] - s["steady_start"] <= 9.5 for s in stages), stages
    assert list((folder / "records" / "sim-x2").glob("*.parquet")) and not (folder / "records" / "sim").exists()
    levels = MasterOutcome.parse(outcome.read_text()).levels
    assert [lv.rate for lv in levels] == [10.0, 20.0]
    # ~10 requests/s over 3–9 s of Poisson arrivals, each a few ms on an idle simulator
    assert levels[0].outcome == "meets" and 15 <= levels[0].requests <= 150, levels[0]
    assert levels[0].ci_low is not None and levels[0].value is not None and levels[0].ci_low <= levels[0].value
