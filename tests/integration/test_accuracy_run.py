"""Accuracy next to cost, end to end on the simulator (examples/accuracy.yaml, docs/accuracy.md):
the answers are kept in the records with their references, scored per variant, and the cheaper
variant whose answers are wrong is not recommended."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.corpus import REPO
from tests.integration.localrun import run_benchmark

pytestmark = pytest.mark.integration


def test_the_cheaper_variant_below_the_accuracy_floor_is_not_the_answer(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "examples" / "accuracy.yaml").read_text())
    doc["spec"]["workload"]["dataset"]["uri"] = str(REPO / "examples" / "datasets" / "capitals-qa.jsonl")
    done, run = run_benchmark(doc, tmp_path)
    report = json.loads((run / "report.json").read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    filler, echo = by_name["g5-filler"]["accuracy"], by_name["g6e-echo"]["accuracy"]
    scores = {name: {s["metric"]: s for s in a["scores"]} for name, a in (("filler", filler), ("echo", echo))}
    # filler tokens match no capital; the echo repeats the context line, right in 30 of the 40 rows
    assert all(s["mean"] == 0 for s in scores["filler"].values()) and filler["floorOutcome"] == "fails"
    for s in scores["echo"].values():
        assert s["ciLow"] <= 0.75 <= s["ciHigh"] and s["n"] >= 100, s
    assert echo["floorOutcome"] == "meets"
    # g5 is the cheaper instance, but its answers are wrong: the recommendation is g6e-echo
    assert by_name["g5-filler"]["costPerHour"] < by_name["g6e-echo"]["costPerHour"]
    assert report["recommendation"]["variant"] == "g6e-echo"
    assert "accuracy below the floor: f1 0 [95% CI 0, 0.0" in by_name["g5-filler"]["reason"]
    assert "## Accuracy and cost" in (run / "report.md").read_text() and "accuracy below the floor" in done.stdout
    # the records keep each answer and its references (evaluation.maxAnswerChars)
    shard = next((run / "records" / "g6e-echo").glob("*.parquet"))
    rows = pq.read_table(shard, columns=["ok", "answer", "reference"]).to_pylist()
    answered = [r for r in rows if r["ok"]]
    assert answered and all(r["answer"] and r["reference"] for r in answered)
    assert {r["answer"].strip() for r in answered} <= {line.splitlines()[-1] for line in _contexts()}


def _contexts() -> list[str]:
    lines = (REPO / "examples" / "datasets" / "capitals-qa.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines]
