"""Accuracy scores (analysis/accuracy.py, docs/accuracy.md) against values computed by hand, the
floor's verdicts, the records they are read from, and the simulator's echo answers."""

from __future__ import annotations

import json
import math

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
from fmbench_k8s.api.spec import AccuracyFloor
from fmbench_k8s.simulator import protocol


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
