"""Accuracy scores (analysis/accuracy.py, docs/accuracy.md) against values computed by hand, the
floor's verdicts, the records they are read from, and the simulator's echo answers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fmbench_k8s.analysis.accuracy import (
    MIN_SCORED,
    accuracy_of,
    exact_match,
    f1,
    rouge_l,
    score_of,
    score_records,
    words,
)
from fmbench_k8s.analysis.embeddings import cosine, similarity_scores
from fmbench_k8s.analysis.judges import Item, judge_answers, keep_drawn, parse_verdict
from fmbench_k8s.api.spec import AccuracyFloor, EmbeddingEndpoint, Judging
from fmbench_k8s.simulator import protocol
from fmbench_k8s.storage import LocalStorage


def test_answers_are_compared_as_squad_normalizes_them() -> None:
    assert words("The  Eiffel Tower, in PARIS!") == ["eiffel", "tower", "in", "paris"]
    assert exact_match(" Paris.", ["paris"]) == 1.0 and exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("Paris city", ["Lyon", "Paris City"]) == 1.0  # the best reference counts
    # F1 on words: "paris france" vs "paris": precision 1/2, recall 1 -> 2/3
    assert f1("Paris, France", ["Paris"]) == pytest.approx(2 / 3)
    assert f1("the cat sat", ["a cat sat down"]) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert f1("", [""]) == 1.0 and f1("x", [""]) == 0.0 and f1("dog", ["cat"]) == 0.0


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence() -> None:
    # "police killed the gunman" vs "police kill the gunman": LCS police, gunman (the is an article): 2
    assert rouge_l("police killed the gunman", ["police kill the gunman"]) == pytest.approx(2 / 3)
    # order matters, unlike F1: "y x" vs "x y" has LCS 1 (F1 would be 1)
    assert rouge_l("y x", ["x y"]) == pytest.approx(0.5) and f1("y x", ["x y"]) == 1.0
    assert rouge_l("one two three four", ["one three four five six"]) == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_a_score_has_wilsons_interval_which_never_shrinks_to_a_point() -> None:
    s = score_of("exactMatch", [1.0] * 75 + [0.0] * 25)
    assert s.mean == 0.75 and s.n == 100
    # Wilson, z = 1.96, p = 0.75, n = 100: centre 0.7408, half-width 0.0834
    assert (s.ci_low, s.ci_high) == pytest.approx((0.6569, 0.8245), abs=1e-4)
    zero = score_of("f1", [0.0] * 200)
    assert zero.ci_low == pytest.approx(0.0, abs=1e-12) and zero.ci_high == pytest.approx(0.0188, abs=1e-4)
    none = score_of("rougeL", [])
    assert none.n == 0 and math.isnan(none.mean)


def test_the_floor_is_met_failed_or_not_decided() -> None:
    floor = AccuracyFloor(metric="f1", min=0.6)
    assert accuracy_of("v", {"f1": [1.0] * 80 + [0.0] * 20}, floor).floor_outcome == "meets"
    failed = accuracy_of("v", {"f1": [1.0] * 30 + [0.0] * 70}, floor)
    assert failed.floor_outcome == "fails" and not failed.meets_floor
    assert failed.reason is not None and failed.reason.startswith("accuracy below the floor: f1 0.3 [95% CI")
    close = accuracy_of("v", {"f1": [1.0] * 60 + [0.0] * 40}, floor)
    assert close.floor_outcome == "inconclusive" and not close.meets_floor
    few = accuracy_of("v", {"f1": [1.0] * (MIN_SCORED - 1)}, floor)
    assert few.floor_outcome == "inconclusive" and f"a floor needs {MIN_SCORED}" in (few.reason or "")
    assert accuracy_of("v", {"f1": [0.0] * 50}, None).meets_floor  # no floor: scores only


def test_only_ok_requests_with_an_answer_and_a_reference_are_scored() -> None:
    frame = pd.DataFrame({
        "ok": [True, True, False, True, None],
        "answer": [" Paris", "Lyon", "Paris", None, "Paris"],
        "reference": [["Paris"], ["Paris", "Lyon"], ["Paris"], ["Paris"], ["Paris"]],
    })  # fmt: skip
    assert score_records(frame, ["exactMatch", "f1"]) == {"exactMatch": [1.0, 1.0], "f1": [1.0, 1.0]}


def test_the_simulators_echo_answers_with_the_prompts_last_line() -> None:
    req = protocol.parse_chat({"messages": [{"role": "user", "content": "Capital of Peru?\nLima city"}],
                               "max_tokens": 16, "stream": True})  # fmt: skip
    short, said = protocol.echoed(req)
    assert said == [" Lima", " city"] and short.max_tokens == 2
    at, _ = protocol.openai_stream(short, True, "id", 0, "m", words=said)
    events = [json.loads(at(i).decode().removeprefix("data: ")) for i in range(2)]
    assert [e["choices"][0]["delta"]["content"] for e in events] == [" Lima", " city"]
    assert [e["choices"][0]["finish_reason"] for e in events] == [None, "stop"]
    capped, _ = protocol.echoed(
        protocol.parse_chat({"messages": [{"role": "user", "content": "a b c d"}], "max_tokens": 2})
    )
    assert capped.max_tokens == 2


def _panel(*names: str, prices: dict[str, float] | None = None, **judging: Any) -> Judging:
    judges = [{"name": n, "url": "http://j:8000/v1", "model": n, **(prices or {})} for n in names]
    return Judging.model_validate({"judges": judges, **judging})


def _items(n: int) -> list[Item]:
    return [Item(f"r{i}", f"q{i}", f"a{i}", (f"a{i}",)) for i in range(n)]


def test_the_panels_majority_is_the_score_and_a_split_panel_scores_half(tmp_path: Path) -> None:
    replies = {"yes": "CORRECT.", "no": "Incorrect", "mixed": "correct"}

    def call(judge: Any, prompt: str) -> tuple[str, int, int]:
        i = int(prompt.rsplit("Answer: a", 1)[1])
        say = replies["yes"] if judge.name == "a" or i % 2 == 0 else replies["no"]
        return (say if judge.name != "c" else "maybe"), 100, 1  # c never gives a verdict

    two = judge_answers(_panel("a", "b", "c"), {"v": _items(4)}, LocalStorage(tmp_path), call=call)
    # a says correct, b correct on even answers, c no vote: 1, 0.5, 1, 0.5
    assert two.votes == {"v": [1.0, 0.5, 1.0, 0.5]} and two.calls == 12 and two.unjudged == 0
    assert two.cost_usd is None  # no judge has a price
    assert parse_verdict(" **Correct** ") == "correct" and parse_verdict("INCORRECT: no") == "incorrect"
    assert parse_verdict("") == parse_verdict("I think so") == "invalid"


def test_max_calls_caps_what_is_sent_and_what_failed_is_said(tmp_path: Path) -> None:
    def call(judge: Any, prompt: str) -> tuple[str, int, int]:
        if "a3" in prompt:
            raise OSError("connection refused")
        return "CORRECT", 10, 1

    judging = _panel("a", prices={"pricePer1mInputTokens": 1.0, "pricePer1mOutputTokens": 2.0}, maxCalls=4)
    got = judge_answers(judging, {"v": _items(6)}, LocalStorage(tmp_path), call=call)
    assert got.calls == 4 and got.errors == 1 and got.votes["v"] == [1.0, 1.0, 1.0] and got.unjudged == 3
    assert got.cost_usd == pytest.approx(3 * (10 * 1.0 + 1 * 2.0) / 1e6)
    assert got.notes == ["judging.maxCalls (4) reached: 2 calls not sent"]
    assert "1 calls failed (first: a: OSError: connection refused)" in got.note(judging)
    # the next analysis sends only what is not cached: the failed call and the two never sent
    again = judge_answers(judging, {"v": _items(6)}, LocalStorage(tmp_path), call=lambda j, p: ("CORRECT", 1, 1))
    assert (again.calls, again.cached, again.votes["v"]) == (3, 3, [1.0] * 6)


def test_the_answers_judged_are_drawn_by_request_id_whatever_the_order() -> None:
    items = _items(50)
    drawn = keep_drawn(keep_drawn([], items[:25], 10), items[25:], 10)
    assert drawn == keep_drawn([], list(reversed(items)), 10) and len(drawn) == 10


def test_cosine_is_the_best_similarity_to_a_reference_and_a_failure_is_said() -> None:
    endpoint = EmbeddingEndpoint(url="http://e:8000/v1", model="e")
    # the simulator's bag-of-words embedding: the same words point the same way
    assert cosine(protocol.embed("Paris city"), protocol.embed("city, PARIS")) == pytest.approx(1.0)
    assert cosine(protocol.embed("Paris"), protocol.embed("Paris city")) == pytest.approx(1 / math.sqrt(2))
    items = [Item("r1", "q", "Paris", ("Lyon", "Paris city")), Item("r2", "q", "Lyon", ("Paris",))]

    def embed(_: Any, texts: list[str]) -> list[list[float]]:
        return [protocol.embed(t) for t in texts]

    got = similarity_scores(endpoint, {"v": items}, embed)
    assert got.scores["v"][0] == pytest.approx(1 / math.sqrt(2)) and got.failed is None and got.requests == 1
    assert got.notes == ["embedding: e, 1 requests, 2 answers scored"]

    def down(_: Any, texts: list[str]) -> list[list[float]]:
        raise OSError("connection refused")

    failed = similarity_scores(endpoint, {"v": items}, down)
    assert failed.scores == {"v": []} and failed.notes == [
        "embedding: e, 1 requests, 0 answers scored; failed: OSError: connection refused"
    ]
