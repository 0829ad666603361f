"""Embedding similarity to the reference (metric cosine; docs/accuracy.md, "Embedding similarity").

Each answer drawn (``embedding.maxAnswers`` per variant, by request id as for the judges) and its
references are embedded by the spec's endpoint (the OpenAI embeddings API, in batches); the
answer's score is its highest cosine similarity to a reference, clipped to [0, 1] (a negative
cosine is an unrelated answer, as 0 is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from fmbench_k8s.analysis.judges import Item, post_json
from fmbench_k8s.api.spec import EmbeddingEndpoint
from fmbench_k8s.contract.layout import EMBEDDING_KEY_ENV

BATCH: Final = 32
Embed = Callable[[EmbeddingEndpoint, list[str]], list[list[float]]]


def embeddings_call(endpoint: EmbeddingEndpoint, texts: list[str]) -> list[list[float]]:
    """One request to ``{url}/embeddings``: a vector per text, in order."""
    body = {"model": endpoint.model, "input": texts}
    doc = post_json(endpoint.url.rstrip("/") + "/embeddings", body, EMBEDDING_KEY_ENV)
    data = sorted(doc["data"], key=lambda d: int(d.get("index", 0)))
    if len(data) != len(texts):
        raise ValueError(f"{len(texts)} texts sent, {len(data)} embeddings received")
    return [[float(x) for x in d["embedding"]] for d in data]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm > 0 else 0.0


@dataclass
class Similarity:
    scores: dict[str, list[float]]  # per variant
    requests: int = 0
    failed: str | None = None  # the first failure; the scores cover what was embedded before it
    notes: list[str] = field(default_factory=list)


def similarity_scores(
    endpoint: EmbeddingEndpoint, drawn: Mapping[str, Sequence[Item]], embed: Embed = embeddings_call
) -> Similarity:
    """Each drawn answer's best cosine similarity to one of its references."""
    out = Similarity(scores={})
    vectors: dict[str, list[float]] = {}  # text -> embedding: a text is embedded once
    texts = sorted({t for items in drawn.values() for i in items for t in (i.answer, *i.references)})
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        try:
            vectors.update(zip(batch, embed(endpoint, batch), strict=True))
        except Exception as err:  # unreachable, refused, malformed: the rest is not scored
            out.failed = f"{type(err).__name__}: {err}"[:300]
            break
        finally:
            out.requests += 1
    for variant, items in drawn.items():
        out.scores[variant] = [
            max(0.0, min(1.0, max(cosine(vectors[i.answer], vectors[r]) for r in i.references)))
            for i in items
            if i.answer in vectors and all(r in vectors for r in i.references)
        ]
    embedded = sum(len(s) for s in out.scores.values())
    note = f"embedding: {endpoint.model}, {out.requests} requests, {embedded} answers scored"
    out.notes.append(note + (f"; failed: {out.failed}" if out.failed else ""))
    return out
