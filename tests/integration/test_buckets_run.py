"""examples/buckets.yaml end to end on the simulator: a three-bucket mix whose long prompts miss a
TTFT bound the mix meets, said per bucket in the report, the console and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.corpus import REPO
from tests.integration.localrun import run_benchmark

pytestmark = pytest.mark.integration


def test_the_buckets_example_answers_per_bucket(tmp_path: Path) -> None:
    done, run = run_benchmark(REPO / "examples" / "buckets.yaml", tmp_path)
    report = json.loads((run / "report.json").read_text())
    (variant,) = report["variants"]
    assert variant["meetsSlo"] and variant["maxConcurrencyMeetingSlo"] == 48
    # Every request of the run was sent in its bucket's range (the simulator counts words; the
    # server's count adds its chat template's few tokens).
    records = pq.read_table(run / "records").to_pandas()
    assert set(records["bucket"]) == {"short", "medium", "long"}
    ranges = {"short": (1, 500), "medium": (501, 2000), "long": (3000, 4000)}
    ok = records[records["outcome"] == "ok"]
    for name, (lo, hi) in ranges.items():
        sent = ok[ok["bucket"] == name]["prompt_tokens"]
        template = 8  # the simulator's chat template: at most a few tokens per message
        assert sent.min() >= lo and sent.max() <= hi + template, (name, sent.min(), sent.max())
    for stage in variant["stages"]:
        assert [b["name"] for b in stage["buckets"]] == ["short", "medium", "long"]
        assert sum(b["requests"] for b in stage["buckets"]) == stage["steady"]["requests"]
    answers = {a["name"]: a for a in variant["buckets"]}
    assert answers["short"]["outcomeAtSloStage"] == "meets" and answers["short"]["maxLevelMeetingSlo"] == 48
    # long prompts' prefill alone passes the 0.3 s TTFT bound (docs/simulator.md's g6e profile)
    assert answers["long"]["outcomeAtSloStage"] == "fails" and answers["long"]["maxLevelMeetingSlo"] is None
    assert "g6e-sim: at the level it is sized at, the requests of bucket(s) long miss the SLO" in done.stdout
    assert "By prompt-length bucket" in (run / "report.md").read_text()
