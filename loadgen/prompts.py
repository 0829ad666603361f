"""Prompts and output lengths for each request.

Synthetic prompts are made of plain words: the simulator (and, roughly, a BPE tokenizer) counts
one token per whitespace-separated word, so a prompt drawn with N tokens is N tokens to the
server. Lengths come from the workload's normal(mean, stddev) clipped to [min, max]; every
worker draws from its own stream seeded by ``workload.seed`` and its index, so a run is
reproducible. Each prompt starts at a random offset of a large word pool, so prompts differ from
their first words on and a server's prefix cache cannot make them free.

Datasets are JSONL (one object per line, the prompt in ``promptField``; an optional integer
``max_tokens``/``output_tokens`` overrides the drawn output length) from a local path,
``s3://bucket/key``, ``configmap://NAME/KEY`` (mounted at /etc/fmbench-datasets/NAME/KEY, or
$FMBENCH_DATASETS_DIR/NAME/KEY) or ``hf://DATASET`` (through the ``datasets`` library).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmbench_k8s.api.spec import (
    CONFIGMAP_URI,
    LONGBENCH_TEMPLATE,
    PromptBucket,
    TokenDistribution,
    Workload,
    template_fields,
)
from fmbench_k8s.contract.layout import DATASETS_DIR
from fmbench_k8s.loadgen.traces import Replay, TraceError, parse_trace

log = logging.getLogger(__name__)

HF_OFFLINE_MESSAGE = (
    "hf:// needs network access to the Hugging Face Hub; download the dataset and use hf:///its/local/directory, "
    "a JSONL path or an s3:// URI"
)
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


class DatasetError(ValueError):
    """A dataset that cannot be read; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    max_tokens: int
    prompt_tokens: int | None  # known for synthetic prompts (words); None for dataset text
    bucket: str | None = None  # workload.buckets' name, when the workload has buckets
    # A conversation's earlier turns, oldest first: user, assistant, user, assistant, ...
    history: tuple[str, ...] = ()
    turn: int | None = None  # 1-based turn of a conversation (workload.conversation)

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat messages: the history's turns, then this prompt as the user's."""
        roles = ("user", "assistant")
        return [*({"role": roles[i % 2], "content": c} for i, c in enumerate(self.history)),
                {"role": "user", "content": self.text}]  # fmt: skip

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
            text, max_tokens = self._corpus.rows[order[i % len(order)]]
            out = max_tokens if max_tokens is not None else draw_tokens(output, self.rng)
            return Prompt(text, out, None, name)
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
        data = (
            _read_s3(uri, storage_endpoint, "trace")
            if uri.startswith("s3://")
            else _read_file(Path(uri), f"trace {uri}")
        )
        try:
            return Corpus([], replay=parse_trace(data, workload.trace))
        except TraceError as err:
            raise DatasetError(str(err)) from None
    rows = load_texts(workload, storage_endpoint)
    if rows is None:
        return None
    if not workload.buckets:
        return Corpus(rows)
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
    return Corpus(rows, by_bucket)


def token_counter(uri: str | None, storage_endpoint: str | None = None) -> tuple[Callable[[list[str]], list[int]], str]:
    """A function counting the tokens of many prompts, and what it counts in (for messages).

    Without a tokenizer, whitespace-separated words: what the simulator counts; a BPE tokenizer
    gives English text about 1.3 tokens per word (docs/workloads.md)."""
    if uri is None:
        return (lambda texts: [len(t.split()) for t in texts]), "whitespace-separated words"
    from tokenizers import Tokenizer

    data = _tokenizer_json(uri, storage_endpoint)
    try:
        tok = Tokenizer.from_str(data.decode())
    except Exception as exc:
        raise DatasetError(f"workload.tokenizer {uri}: not a tokenizer.json ({exc})") from None

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    return count, f"tokens of {uri}"


def _tokenizer_json(uri: str, storage_endpoint: str | None) -> bytes:
    """tokenizer.json from a path, s3:// or hf://MODEL (hf:///dir: a downloaded model's directory)."""
    if uri.startswith("hf://"):
        name = uri.removeprefix("hf://")
        local = Path(name)
        if local.is_absolute():
            return _read_file(local / "tokenizer.json" if local.is_dir() else local, f"tokenizer {uri}")
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(name, "tokenizer.json")).read_bytes()
        except Exception as exc:
            raise DatasetError(
                f"workload.tokenizer {uri}: cannot download tokenizer.json ({type(exc).__name__}); without network "
                "access, download it and name its path, s3:// copy or hf:///model/directory"
            ) from None
    if uri.startswith("s3://"):
        return _read_s3(uri, storage_endpoint, "tokenizer")
    if "://" in uri:
        raise DatasetError(f"unsupported tokenizer URI {uri!r}: use a path, s3://BUCKET/KEY or hf://MODEL")
    return _read_file(Path(uri), f"tokenizer {uri}")


def load_texts(workload: Workload, storage_endpoint: str | None = None) -> list[tuple[str, int | None]] | None:
    """The workload's dataset rows (prompt, max_tokens or None); None for synthetic prompts. With
    ``dataset.sample``, that many rows drawn without replacement, the same for every worker and run
    with the same ``workload.seed``."""
    ds = workload.dataset
    if ds is None:
        return None
    data = load_dataset_bytes(ds.uri, storage_endpoint)
    template = ds.prompt_template or (LONGBENCH_TEMPLATE if ds.format == "longbench" else None)
    if template is not None and ds.format != "sharegpt":
        rows = _templated(data, ds.uri, ds.format, template)
    elif ds.format == "parquet":
        rows = parse_parquet(data, ds.prompt_field)
    elif ds.format == "sharegpt":
        rows = parse_sharegpt(_text(data, ds.uri))
    else:
        rows = parse_jsonl(_text(data, ds.uri), ds.prompt_field)
    if not rows:
        raise DatasetError(f"dataset {ds.uri} has no prompts")
    if ds.sample is not None and ds.sample < len(rows):
        picked = sorted(random.Random(f"dataset:{workload.seed}").sample(range(len(rows)), ds.sample))
        rows = [rows[i] for i in picked]
    return rows


def _text(data: bytes, uri: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"dataset {uri}: not UTF-8 text at byte {exc.start} (a Parquet file? set format: parquet)"
        ) from None


def _max_tokens(obj: dict[str, Any]) -> int | None:
    out = obj.get("max_tokens", obj.get("output_tokens"))
    return out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else None


def _templated(data: bytes, uri: str, fmt: str, template: str) -> list[tuple[str, int | None]]:
    """Each row's prompt made from its fields by ``template`` (FMBench's prompt templates)."""
    if fmt == "parquet":
        import io

        import pyarrow.parquet as pq

        try:
            objs: list[tuple[int, Any]] = list(enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), 1))
        except Exception as exc:
            raise DatasetError(f"dataset: not a Parquet file ({exc})") from None
        where = "row"
    else:
        objs = []
        for n, line in enumerate(_text(data, uri).splitlines(), 1):
            if line.strip():
                try:
                    objs.append((n, json.loads(line)))
                except ValueError as exc:
                    raise DatasetError(f"dataset line {n}: not JSON ({exc})") from None
        where = "line"
    names = template_fields(template)
    rows = []
    for n, obj in objs:
        missing = [k for k in names if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise DatasetError(f"dataset {where} {n}: no field {missing[0]!r} for promptTemplate")
        rows.append((template.format_map({k: obj[k] for k in names}), _max_tokens(obj)))
    return rows


def parse_jsonl(text: str, field: str) -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"dataset line {n}: not JSON ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise DatasetError(f"dataset line {n}: expected an object with a string field {field!r}")
        rows.append((obj[field], _max_tokens(obj)))
    return rows


def parse_parquet(data: bytes, field: str) -> list[tuple[str, int | None]]:
    import io

    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise DatasetError(f"dataset: not a Parquet file ({exc})") from None
    if field not in table.column_names:
        raise DatasetError(f"dataset: no column {field!r} (columns: {', '.join(table.column_names)}); set promptField")
    prompts = table.column(field).to_pylist()
    budget = next(
        (table.column(c).to_pylist() for c in ("max_tokens", "output_tokens") if c in table.column_names), None
    )
    rows = []
    for n, text in enumerate(prompts, 1):
        if not isinstance(text, str):
            raise DatasetError(f"dataset row {n}: column {field!r} is not a string")
        rows.append((text, _max_tokens({"max_tokens": budget[n - 1]}) if budget is not None else None))
    return rows


_USER = {"human", "user"}


def parse_sharegpt(text: str) -> list[tuple[str, int | None]]:
    """The first user turn of each conversation: a JSON list, or JSONL, of objects holding
    ``conversations`` ([{from, value}], ShareGPT's) or ``messages`` ([{role, content}], OpenAI's)."""
    stripped = text.lstrip()
    try:
        items = (
            json.loads(text) if stripped.startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        )
    except ValueError as exc:
        raise DatasetError(f"dataset: not ShareGPT JSON or JSONL ({exc})") from None
    rows = []
    for n, item in enumerate(items, 1):
        turns = item.get("conversations", item.get("messages")) if isinstance(item, dict) else None
        if not isinstance(turns, list):
            raise DatasetError(f"dataset conversation {n}: expected an object with conversations or messages")
        first = next(
            (
                t.get("value", t.get("content"))
                for t in turns
                if isinstance(t, dict) and t.get("from", t.get("role")) in _USER
            ),
            None,
        )
        if isinstance(first, str) and first.strip():  # conversations that open with the assistant have no prompt
            rows.append((first, _max_tokens(item)))
    return rows


def load_dataset_bytes(uri: str, storage_endpoint: str | None = None) -> bytes:
    """The file behind ``uri`` (an hf:// dataset as JSONL)."""
    if uri.startswith("s3://"):
        return _read_s3(uri, storage_endpoint, "dataset")
    if uri.startswith("configmap://"):
        m = CONFIGMAP_URI.match(uri)
        if m is None:
            raise DatasetError(f"invalid dataset URI {uri!r}: use configmap://NAME/KEY")
        path = Path(os.environ.get("FMBENCH_DATASETS_DIR", DATASETS_DIR)) / m["name"] / m["key"]
        return _read_file(path, f"dataset {uri} (mounted at {path})")
    if uri.startswith("hf://"):
        return _hf_jsonl(uri.removeprefix("hf://")).encode()
    if "://" in uri:
        raise DatasetError(f"unsupported dataset URI {uri!r}: use a path, s3://, configmap:// or hf://")
    return _read_file(Path(uri), f"dataset {uri}")


def _read_s3(uri: str, storage_endpoint: str | None, what: str) -> bytes:
    from fmbench_k8s.storage import open_storage

    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or parent in ("s3:/", "s3:"):
        raise DatasetError(f"invalid {what} URI {uri!r}: use s3://BUCKET/KEY")
    try:
        return open_storage(parent, endpoint_url=storage_endpoint).read_bytes(name)
    except Exception as exc:
        raise DatasetError(f"cannot read {what} {uri}: {exc}") from None


def _read_file(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {shown}: {exc.strerror}") from None


def _hf_jsonl(name: str) -> str:
    """A Hugging Face dataset's train split as JSONL: from the hub (``hf://ORG/NAME``, network
    needed), or from a local directory (``hf:///path``: one written by ``save_to_disk``, or one of
    data files such as JSONL or Parquet, as a hub dataset is once downloaded)."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"hf://{name} needs the `datasets` package (pip install 'fmbench-k8s[hf]'); the project's image does "
            "not carry it: in a cluster use s3:// or configmap://"
        ) from None
    local = Path(name)
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():  # save_to_disk's
            data: Any = datasets.load_from_disk(str(local))
            data = data["train"] if isinstance(data, datasets.DatasetDict) else data
        else:
            data = datasets.load_dataset(name, split="train")
    except Exception as exc:
        hint = f"cannot read the dataset directory {name}" if local.is_dir() else HF_OFFLINE_MESSAGE
        raise DatasetError(f"{hint} ({type(exc).__name__}: {exc})") from None
    return "\n".join(json.dumps(dict(row), default=str) for row in data)
