"""The analysis gives today's numbers on a fixed record set, to the last digit of report.json.

``tests/data/analysis_golden.json`` was written by the analysis as of 2026-12-03 (commit 3ce2fa4:
gaps as list<float32>, gathered into one array) from the records ``_records`` makes; every change
to how the records are read or summarized must leave it unchanged. Each stage has > 2^20 gaps in
four shards, so the no-copy radix path runs. Rewrite it only for a change of definition
(docs/metrics.md), with ``python tests/unit/test_analysis_golden.py`` and a note of why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fmbench_k8s.analysis.run import analyze_run, load_report
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.storage import LocalStorage

GOLDEN = Path(__file__).parent.parent / "data" / "analysis_golden.json"
SLOS = {
    "e2e": {"metric": "e2e", "percentile": 95, "maxSeconds": 5.0},
    "itl": {"metric": "itl", "percentile": 99, "maxSeconds": 0.05},
}


def _records(root: Path) -> LocalStorage:
    variants = [
        SyntheticVariant("a", levels=(1, 8), ttft_s=0.15, itl_s=0.02, error_rate=0.005, requests_per_stage=12_000),
        SyntheticVariant("b", levels=(4,), ttft_s=0.1, itl_s=0.012, jitter=0.3, requests_per_stage=12_000),
    ]
    table, stages = synthesize_table(variants, stage_s=600, warmup_s=30, drain_s=60, workers=4, seed=21)
    storage = LocalStorage(root)
    write_run(storage, table, stages)
    return storage


def _numbers(storage: LocalStorage, slo: str) -> dict[str, Any]:
    spec = BenchmarkSpec.model_validate({
        "variants": [
            {"name": "a", "instanceType": "g5.2xlarge", "engine": "simulator"},
            {"name": "b", "instanceType": "g6e.2xlarge", "engine": "simulator"},
        ],
        "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 128}},
        "slo": {"latency": SLOS[slo]},
    })  # fmt: skip
    analyze_run(spec, storage, benchmark="golden", run_id="r", plots=False)
    doc = load_report(storage)
    return {"variants": doc["variants"], "recommendation": doc["recommendation"]}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    return _records(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("slo", SLOS)
def test_the_report_of_a_fixed_record_set_is_todays(records: LocalStorage, slo: str) -> None:
    want = json.loads(GOLDEN.read_text())[slo]
    got = json.loads(json.dumps(_numbers(records, slo)))
    assert got == want


if __name__ == "__main__":  # write the golden file (see the docstring)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        storage = _records(Path(tmp))
        GOLDEN.write_text(json.dumps({slo: _numbers(storage, slo) for slo in SLOS}, indent=1, sort_keys=True) + "\n")
    sys.exit(0)
