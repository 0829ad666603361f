"""Accuracy next to cost (spec.evaluation; definitions: docs/accuracy.md).

Each ok request of a variant with a reference answer is scored on its answer text (the records'
``answer`` and ``reference`` columns): exact match and F1 as SQuAD scores them (normalized words:
lower case, no punctuation, no articles; the best over the references), and ROUGE-L (the F1 of
the longest common subsequence of the normalized words). A variant's score is the mean over its
scored requests, with Wilson's 95 % interval. For exact match that is the interval of a
proportion; for F1 and ROUGE-L it errs wide, since a score in [0, 1] with mean μ has a variance
of at most μ(1 − μ), a proportion's. So the interval never shrinks to a point when every answer
scores the same.

An accuracy floor (``evaluation.floor``) is met when the interval's low end is at or above the
floor, failed when its high end is below it, and inconclusive otherwise or with fewer than
MIN_SCORED answers. Only a variant that meets it can be recommended.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pandas as pd

from fmbench_k8s.analysis.judges import Item, keep_drawn
from fmbench_k8s.api.spec import AccuracyFloor, Evaluation

Z95: Final = 1.959963984540054
MIN_SCORED: Final = 30  # fewer answers cannot support a verdict on a floor
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def words(text: str) -> list[str]:
    """SQuAD's normalization: lower case, punctuation and articles removed, whitespace collapsed."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def exact_match(answer: str, references: Sequence[str]) -> float:
    said = words(answer)
    return max(float(said == words(r)) for r in references)


def _f1(said: Sequence[str], ref: Sequence[str]) -> float:
    common = sum((Counter(said) & Counter(ref)).values())
    if not said or not ref:
        return float(said == ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(said), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1(answer: str, references: Sequence[str]) -> float:
    said = words(answer)
    return max(_f1(said, words(r)) for r in references)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(answer: str, references: Sequence[str]) -> float:
    said = words(answer)
    best = 0.0
    for r in references:
        ref = words(r)
        if not said or not ref:
            best = max(best, float(said == ref))
            continue
        lcs = _lcs(said, ref)
        if lcs:
            precision, recall = lcs / len(said), lcs / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SCORERS: Final[Mapping[str, Callable[[str, Sequence[str]], float]]] = {
    "exactMatch": exact_match,
    "f1": f1,
    "rougeL": rouge_l,
}


def score_records(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[str, list[float]]:
    """Per metric (of SCORERS), the scores of the ok requests of ``frame`` that have an answer and a
    reference."""
    out: dict[str, list[float]] = {m: [] for m in metrics}
    for _, answer, references in _scorable(frame):
        for m in metrics:
            out[m].append(SCORERS[m](answer, references))
    return out


def _scorable(frame: pd.DataFrame) -> list[tuple[int, str, list[str]]]:
    """(row position, answer, references) of the ok requests with an answer and a reference."""
    if frame.empty:
        return []
    ok = frame["ok"].fillna(False).astype(bool) & frame["answer"].notna() & frame["reference"].notna()
    rows = []
    for i, answer, refs in zip(ok[ok].index, frame.loc[ok, "answer"], frame.loc[ok, "reference"], strict=True):
        references = [r for r in refs if isinstance(r, str)]
        if references:
            rows.append((int(i), str(answer), references))
    return rows


@dataclass
class Scoring:
    """A variant's answers as its stages are read: the text scores, and those drawn for the judges."""

    metrics: Sequence[str]  # of SCORERS
    draw_limit: int | None  # the most answers judges or the embedding take; None: neither
    scores: dict[str, list[float]] = field(default_factory=dict)
    drawn: list[Item] = field(default_factory=list)  # ordered by rank: a prefix is a smaller draw

    def add(self, frame: pd.DataFrame) -> None:
        for metric, values in score_records(frame, self.metrics).items():
            self.scores.setdefault(metric, []).extend(values)
        if self.draw_limit is not None:
            more = [
                Item(str(frame.at[i, "request_id"]), str(frame.at[i, "prompt"] or ""), answer, tuple(refs))
                for i, answer, refs in _scorable(frame)
            ]
            self.drawn = keep_drawn(self.drawn, more, self.draw_limit)


def scoring_for(evaluation: Evaluation | None) -> Scoring | None:
    if evaluation is None:
        return None
    limits = [x.max_answers for x in (evaluation.judging, evaluation.embedding) if x is not None]
    text = [m for m in evaluation.metrics if m in SCORERS]
    return Scoring(text, max(limits) if limits else None, {m: [] for m in text})


@dataclass(frozen=True)
class Score:
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Accuracy:
    """A variant's scores and, with a floor, its verdict."""

    variant: str
    scores: dict[str, Score]
    floor_outcome: Literal["meets", "fails", "inconclusive"] | None
    reason: str | None  # why the floor is not met

    @property
    def meets_floor(self) -> bool:
        return self.floor_outcome in (None, "meets")


def score_of(metric: str, values: Sequence[float]) -> Score:
    n = len(values)
    if n == 0:
        return Score(metric, math.nan, math.nan, math.nan, 0)
    mean = float(np.mean(values))
    centre = (mean + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(mean * (1 - mean) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return Score(metric, mean, max(0.0, centre - half), min(1.0, centre + half), n)


def accuracy_of(variant: str, scored: Mapping[str, Sequence[float]], floor: AccuracyFloor | None) -> Accuracy:
    scores = {m: score_of(m, values) for m, values in scored.items()}
    if floor is None:
        return Accuracy(variant, scores, None, None)
    s = scores[floor.metric]
    shown = f"{floor.metric} {s.mean:.3g} [95% CI {s.ci_low:.3g}, {s.ci_high:.3g}] over {s.n} answers"
    if s.n < MIN_SCORED:
        return Accuracy(variant, scores, "inconclusive", f"accuracy: {s.n} scored answers; a floor needs {MIN_SCORED}")
    if s.ci_low >= floor.min:
        return Accuracy(variant, scores, "meets", None)
    if s.ci_high < floor.min:
        return Accuracy(variant, scores, "fails", f"accuracy below the floor: {shown} < {floor.min:g}")
    return Accuracy(variant, scores, "inconclusive", f"accuracy not shown above the floor: {shown} vs {floor.min:g}")
