"""Prompts and output lengths for each request.

Synthetic prompts are made of plain words: the simulator (and, roughly, a BPE tokenizer) counts
one token per whitespace-separated word, so a prompt drawn with N tokens is N tokens to the
server. Lengths come from the workload's normal(mean, stddev) clipped to [min, max], or from its
buckets' ranges; every worker draws from its own stream seeded by ``workload.seed`` and its index,
so a run is reproducible. Each prompt starts at a random offset of a large word pool, so prompts
differ from their first words on and a server's prefix cache cannot make them free, unless the
workload asks for shared prefixes. A dataset's rows (loadgen/datasets.py) or a trace's lengths
(contract/traces.py) take the synthetic lengths' place. docs/workloads.md has the shapes.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fmbench_k8s.api.spec import PromptBucket, TokenDistribution, Workload
from fmbench_k8s.contract.images import Image
from fmbench_k8s.contract.traces import Replay, TraceError, parse_trace
from fmbench_k8s.loadgen.datasets import DatasetError, load_rows, read_path_or_s3, token_counter
from fmbench_k8s.loadgen.images import synthetic_png

log = logging.getLogger(__name__)

POOL_WORDS = 1 << 16

# Short, common words: one token each in the usual BPE vocabularies, and one word to the simulator.
VOCAB = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "as",
    "with",
    "by",
    "he",
    "at",
    "from",
    "his",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "had",
    "not",
    "but",
    "one",
    "have",
    "first",
    "new",
    "also",
    "they",
    "their",
    "has",
    "been",
    "her",
    "two",
    "after",
    "other",
    "who",
    "its",
    "she",
    "time",
    "when",
    "into",
    "all",
    "more",
    "there",
    "during",
    "most",
    "some",
    "used",
    "only",
    "over",
    "would",
    "can",
    "then",
    "may",
    "between",
    "these",
    "out",
    "through",
    "many",
    "under",
    "about",
    "made",
    "world",
    "year",
    "city",
    "area",
    "part",
    "year",
    "state",
    "school",
    "people",
    "while",
    "later",
    "known",
    "both",
    "up",
    "such",
    "where",
    "early",
    "name",
    "since",
    "three",
    "well",
    "any",
    "work",
    "each",
    "life",
    "being",
    "same",
    "war",
    "so",
    "team",
    "high",
    "long",
    "film",
    "game",
    "music",
    "house",
    "water",
    "light",
    "small",
    "large",
    "river",
    "south",
    "north",
    "east",
    "west",
    "power",
    "day",
    "night",
    "old",
    "young",
    "group",
    "order",
    "place",
    "side",
    "field",
    "point",
    "line",
    "word",
    "book",
    "land",
    "road",
    "story",
    "color",
    "sound",
    "table",
    "paper",
    "hand",
    "stone",
    "wood",
    "glass",
    "metal",
    "tree",
)


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    max_tokens: int
    prompt_tokens: int | None  # known for synthetic prompts (words); None for dataset text
    bucket: str | None = None  # workload.buckets' name, when the workload has buckets
    # A conversation's earlier turns, oldest first: user, assistant, user, assistant, ...
    history: tuple[str, ...] = ()
    turn: int | None = None  # 1-based turn of a conversation (workload.conversation)
    reference: tuple[str, ...] | None = None  # the dataset row's reference answers (dataset.referenceField)
    images: tuple[Image, ...] = ()  # sent before the text (workload.images, dataset.imageField)
    image_size: str | None = None  # workload.images.sizes' name of its synthetic images

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages: the history's turns, then this prompt as the user's; with images, its
        content is OpenAI's parts: the images (data URLs), then the text."""
        roles = ("user", "assistant")
        content: Any = self.text
        if self.images:
            content = [*({"type": "image_url", "image_url": {"url": i.data_url()}} for i in self.images),
                       {"type": "text", "text": self.text}]  # fmt: skip
        return [*({"role": roles[i % 2], "content": c} for i, c in enumerate(self.history)),
                {"role": "user", "content": content}]  # fmt: skip

    @property
    def full_text(self) -> str:
        """The history and this prompt as one text, for APIs without messages."""
        return "\n\n".join((*self.history, self.text)) if self.history else self.text


@dataclass(frozen=True)
class Corpus:
    """A dataset's rows (prompt, max_tokens or None) and, with buckets, each bucket's row indices;
    or a trace to replay, whose rows give each arrival's lengths."""

    rows: list[tuple[str, int | None]]
    by_bucket: dict[str, list[int]] = field(default_factory=dict)
    replay: Replay | None = None
    references: list[tuple[str, ...]] | None = None  # per row (dataset.referenceField)
    images: list[tuple[Image, ...]] | None = None  # per row (dataset.imageField)


def draw_tokens(dist: TokenDistribution, rng: random.Random) -> int:
    """normal(mean, stddev), rounded and clipped to [min, max] (min defaults to 1)."""
    value = dist.mean if dist.stddev == 0 else round(rng.gauss(dist.mean, dist.stddev))
    lo = dist.min if dist.min is not None else 1
    hi = dist.max if dist.max is not None else value
    return int(max(lo, min(value, hi)))


_POOLS: dict[int, list[str]] = {}


def word_pool(seed: int) -> list[str]:
    """The words synthetic prompts are cut from (the same for every worker of a run)."""
    if seed not in _POOLS:
        _POOLS[seed] = random.Random(f"fmbench-words:{seed}").choices(VOCAB, k=POOL_WORDS)
    return _POOLS[seed]


class PromptSource:
    """Endless prompts of one stream (a worker's share of a stage); not shared between processes.

    ``stream`` names the random stream (the worker's index and the stage), so a run repeats
    exactly with the same seed and worker count. With buckets, each prompt's bucket is drawn by
    share first, then its length in the bucket's range (or a dataset row of that bucket)."""

    def __init__(self, workload: Workload, stream: str, corpus: Corpus | None = None) -> None:
        self.workload = workload
        self.rng = random.Random(f"fmbench-prompts:{workload.seed}:{stream}")
        self._corpus = corpus
        self._pool = word_pool(workload.seed)
        self._prefixes = shared_prefixes(workload)
        self._buckets = workload.buckets
        self._weights = [b.share for b in self._buckets]
        self._image_weights = [s.share for s in workload.images.sizes] if workload.images is not None else []
        # Each bucket (or the whole dataset, as ""): its rows in a shuffled order, and the next one.
        self._order: dict[str, list[int]] = {}
        self._next: dict[str, int] = {}
        if corpus is not None and corpus.replay is None:
            if not corpus.rows:
                raise DatasetError("the dataset has no prompts")
            groups = corpus.by_bucket if self._buckets else {"": list(range(len(corpus.rows)))}
            for name, rows in groups.items():
                order = list(rows)
                self.rng.shuffle(order)
                self._order[name], self._next[name] = order, 0

    def next(self, arrival: int | None = None) -> Prompt:
        """The next prompt; in a trace replay, the one of the stage's arrival number ``arrival``."""
        prompt = self._text_prompt(arrival)
        images = self.workload.images
        if images is None:
            return prompt
        size = self.rng.choices(images.sizes, self._image_weights)[0] if len(images.sizes) > 1 else images.sizes[0]
        made = tuple(synthetic_png(size.width, size.height, self.rng) for _ in range(images.per_prompt))
        return replace(prompt, images=made, image_size=size.name)

    def _text_prompt(self, arrival: int | None) -> Prompt:
        replay = self._corpus.replay if self._corpus is not None else None
        if replay is not None and arrival is not None:
            n, out = replay.lengths(arrival)
            return Prompt(self.synthetic_text(n), out, n)
        bucket = self.rng.choices(self._buckets, self._weights)[0] if self._buckets else None
        output = (bucket and bucket.output_tokens) or self.workload.output_tokens
        name = bucket.name if bucket else None
        if self._order and self._corpus is not None:
            order = self._order[name or ""]
            i = self._next[name or ""]
            self._next[name or ""] = i + 1
            row = order[i % len(order)]
            text, max_tokens = self._corpus.rows[row]
            out = max_tokens if max_tokens is not None else draw_tokens(output, self.rng)
            refs, images = self._corpus.references, self._corpus.images
            return Prompt(text, out, None, name, reference=refs[row] if refs is not None else None,
                          images=images[row] if images is not None else ())  # fmt: skip
        n = self._length(bucket)
        text, out = self.synthetic_text(n), draw_tokens(output, self.rng)
        if self._prefixes:
            prefix = self.rng.choice(self._prefixes)
            return Prompt(f"{prefix} {text}", out, n + len(prefix.split()), name)
        return Prompt(text, out, n, name)

    def _length(self, bucket: PromptBucket | None) -> int:
        if bucket is not None:
            return self.rng.randint(bucket.min_tokens, bucket.max_tokens)
        assert self.workload.prompt_tokens is not None  # the spec requires it without buckets
        return draw_tokens(self.workload.prompt_tokens, self.rng)

    def synthetic_text(self, n: int) -> str:
        start = self.rng.randrange(POOL_WORDS)
        words = self._pool[start : start + n]
        while len(words) < n:  # wrap around the pool (and repeat it for very long prompts)
            words += self._pool[: n - len(words)]
        return " ".join(words)


def shared_prefixes(workload: Workload) -> list[str]:
    """The workload's shared prefixes (none without sharedPrefix): the same texts for every
    worker, stage and run with the same seed, each distinct from its first word on."""
    sp = workload.shared_prefix
    if sp is None:
        return []
    key = (workload.seed, sp.prefixes, sp.tokens)
    if key not in _PREFIXES:
        _PREFIXES[key] = [" ".join(random.Random(f"fmbench-prefix:{workload.seed}:{j}").choices(VOCAB, k=sp.tokens))
                          for j in range(sp.prefixes)]  # fmt: skip
    return _PREFIXES[key]


_PREFIXES: dict[tuple[int, int, int], list[str]] = {}


def load_corpus(workload: Workload, storage_endpoint: str | None = None) -> Corpus | None:
    """The workload's dataset, sorted into its buckets; None for synthetic prompts. A bucket that
    no row falls in is an error; rows that fall in no bucket are left out (and counted in the log)."""
    if workload.trace is not None:
        uri = workload.trace.uri
        data = read_path_or_s3(uri, storage_endpoint, "trace")
        try:
            return Corpus([], replay=parse_trace(data, workload.trace))
        except TraceError as err:
            raise DatasetError(str(err)) from None
    loaded = load_rows(workload, storage_endpoint)
    if loaded is None:
        return None
    rows, references, images = loaded
    if not workload.buckets:
        return Corpus(rows, references=references, images=images)
    count, unit = token_counter(workload.tokenizer, storage_endpoint)
    lengths = count([text for text, _ in rows])
    by_bucket: dict[str, list[int]] = {b.name: [] for b in workload.buckets}
    for i, n in enumerate(lengths):
        for b in workload.buckets:
            if b.min_tokens <= n <= b.max_tokens:
                by_bucket[b.name].append(i)
                break
    empty = [b for b in workload.buckets if not by_bucket[b.name]]
    if empty:
        shown = ", ".join(f"{b.name} ({b.min_tokens}-{b.max_tokens})" for b in empty)
        raise DatasetError(
            f"workload.buckets: no prompt of the dataset falls in {shown}, counted in {unit}; the dataset's prompts "
            f"have {min(lengths)}-{max(lengths)}"
        )
    placed = sum(len(v) for v in by_bucket.values())
    if placed < len(rows):
        log.info("%d of %d dataset prompts fall in no bucket (counted in %s) and are not sent", len(rows) - placed,
                 len(rows), unit)  # fmt: skip
    return Corpus(rows, by_bucket, references=references, images=images)


AHEAD_MOST = 16  # prompts made ahead at a time ...
AHEAD_BUDGET_S = 0.001  # ... or fewer, once making them took this long (large images)


def make_ahead(
    source: PromptSource, encode: Callable[[Prompt], bytes | None], ready: deque[tuple[Prompt, bytes | None]]
) -> None:
    """Append ``source``'s next prompts to ``ready`` with their request bodies (``encode``), in
    the order requests take them: ``AHEAD_MOST``, or as many as ``AHEAD_BUDGET_S`` allows, at
    least one. Made back to back, they cost a fraction of what each costs made when its request
    starts, in a worker woken with cold caches (docs/performance.md)."""
    until = time.perf_counter() + AHEAD_BUDGET_S
    for _ in range(AHEAD_MOST):
        prompt = source.next()
        ready.append((prompt, encode(prompt)))
        if time.perf_counter() > until:
            return
