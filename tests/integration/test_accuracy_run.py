"""Accuracy next to cost, end to end on the simulator (examples/accuracy.yaml, docs/accuracy.md):
the answers are kept in the records with their references, scored per variant, and the cheaper
variant whose answers are wrong is not recommended."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.corpus import REPO
from tests.integration.localrun import CLI, run_benchmark
from tests.integration.test_loadgen_support import start_simulator

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


def test_a_panel_of_llm_judges_scores_the_answers_and_its_verdicts_are_cached(tmp_path: Path) -> None:
    """evaluation.judging (docs/accuracy.md, "Judges"): two simulators in judge mode and one that
    answers filler (no verdict: no vote) judge each variant's drawn answers; a second analysis of
    the run sends no call, every verdict comes from the run's cache. The third simulator also
    embeds answers and references for metric cosine."""
    judging = ("--answer", "judge", "--model", "judge")
    judges = [start_simulator(*judging), start_simulator(*judging), start_simulator("--model", "judge")]
    try:
        doc = yaml.safe_load((REPO / "examples" / "accuracy.yaml").read_text())
        doc["spec"]["workload"]["dataset"]["uri"] = str(REPO / "examples" / "datasets" / "capitals-qa.jsonl")
        panel = [
            {"name": name, "url": sim.url + "/v1", "model": "judge", "pricePer1mInputTokens": 0.5,
             "pricePer1mOutputTokens": 1.5}
            for name, sim in zip(("judge-a", "judge-b", "babbler"), judges, strict=True)
        ]  # fmt: skip
        doc["spec"]["evaluation"] = {
            "metrics": ["exactMatch", "cosine", "judge"],
            "floor": {"metric": "judge", "min": 0.6},
            "judging": {"judges": panel, "maxAnswers": 60, "concurrency": 4},
            # the simulator's /v1/embeddings: hashed bags of words
            "embedding": {"url": judges[2].url + "/v1", "model": "judge", "maxAnswers": 100},
        }
        _, run = run_benchmark(doc, tmp_path)
        report = json.loads((run / "report.json").read_text())
        by_name = {v["name"]: {s["metric"]: s for s in v["accuracy"]["scores"]} for v in report["variants"]}
        # the panel agrees with exact match on these answers: the echo is right in 3 of 4 rows
        assert by_name["g5-filler"]["judge"]["mean"] == 0 and by_name["g5-filler"]["judge"]["n"] == 60
        echo = by_name["g6e-echo"]["judge"]
        assert echo["n"] == 60 and echo["ciLow"] <= 0.75 <= echo["ciHigh"], echo
        assert report["recommendation"]["variant"] == "g6e-echo"
        # cosine: 1 for a right capital, near 0 for a wrong one (a hash collision may add a little)
        cos = {name: scores["cosine"] for name, scores in by_name.items()}
        assert cos["g6e-echo"]["n"] == cos["g5-filler"]["n"] == 100
        assert 0.7 <= cos["g6e-echo"]["mean"] <= 0.85 and cos["g5-filler"]["mean"] <= 0.1, cos
        assert any(n.startswith("embedding: judge, ") and "200 answers scored" in n for n in report["notes"])
        note = next(n for n in report["notes"] if n.startswith("judges: 3"))
        # identical prompts are judged once: the dataset's 40 rows give at most 40 distinct per variant
        calls = int(note.split("; ")[1].split()[0])
        assert 0 < calls <= 3 * 80 and ", 0 verdicts from the cache" in note and "$0.0" in note, note
        assert "failed" not in note, note
        assert (run / "evaluation" / "judges.json").is_file()
        again = subprocess.run([CLI, "analyze", str(run), "--no-plots"], capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stderr
        notes = json.loads((run / "report.json").read_text())["notes"]
        # every drawn answer's verdicts (2 variants x 60 answers x 3 judges) come from the cache
        assert any(n.startswith("judges: 3") and "; 0 calls, 360 verdicts from the cache" in n for n in notes), notes
    finally:
        for sim in judges:
            sim.stop()
