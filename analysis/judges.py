"""A panel of LLM judges (evaluation.judging; docs/accuracy.md, "Judges").

Each answer drawn for judging (at most ``maxAnswers`` per variant, the lowest request-id hashes,
so the same answers are judged however often the analysis runs) goes to every judge of the
panel with the judge prompt filled in. A judge says CORRECT or INCORRECT. The answer's score is the
panel's majority: 1, 0, or 0.5 for a split panel; a reply that is neither word is no vote.

Verdicts are cached in the run's ``evaluation/judges.json`` by judge, model and filled prompt, so
a second analysis (a re-run, a resumed Job) sends nothing already judged. ``maxCalls`` caps the
calls sent (cached verdicts are free); answers left unjudged when it runs out are noted, and the
score covers the answers judged. Calls use the OpenAI chat API or Bedrock Converse, with
temperature 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Final

from fmbench_k8s.api.spec import Judge, Judging
from fmbench_k8s.contract.layout import judge_key_env
from fmbench_k8s.storage import Storage

CACHE_KEY: Final = "evaluation/judges.json"
TIMEOUT_S: Final = 60.0
MAX_CONCURRENCY: Final = 64  # evaluation.judging.concurrency's bound (api/spec.py)
Verdict = str  # "correct" | "incorrect" | "invalid" | "error"


@dataclass(frozen=True)
class Item:
    """One answer to judge."""

    request_id: str
    question: str
    answer: str
    references: tuple[str, ...]

    @property
    def rank(self) -> str:
        return hashlib.sha256(self.request_id.encode()).hexdigest()


def keep_drawn(items: list[Item], more: Sequence[Item], limit: int) -> list[Item]:
    """The ``limit`` items of lowest rank among ``items`` and ``more`` (a stage's shards at a time)."""
    return sorted([*items, *more], key=lambda i: i.rank)[:limit]


def default_prompt() -> str:
    return resources.files("fmbench_k8s.analysis").joinpath("data/judge_prompt.txt").read_text()


def fill(template: str, item: Item) -> str:
    return (
        template.replace("{question}", item.question)
        .replace("{reference}", " | ".join(item.references))
        .replace("{answer}", item.answer)
    )


def parse_verdict(text: str) -> Verdict:
    first = (text.strip().split() or [""])[0].strip(".,:;!\"'*").lower()
    return first if first in ("correct", "incorrect") else "invalid"


Call = Callable[[Judge, str], tuple[str, int, int]]


def post_json(url: str, body: Mapping[str, Any], key_env: str) -> dict[str, Any]:
    """POST ``body`` to an OpenAI-compatible ``url``, with the bearer token in $``key_env`` if set."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
        doc: dict[str, Any] = json.load(resp)
    return doc


def judge_call(judge: Judge, prompt: str) -> tuple[str, int, int]:
    """(reply, input tokens, output tokens) of one judge's call, on its API."""
    return bedrock_call(judge, prompt) if judge.api == "bedrock" else chat_call(judge, prompt)


def bedrock_call(judge: Judge, prompt: str) -> tuple[str, int, int]:
    """One Bedrock Converse call (not streamed), signed with the process's AWS identity."""
    resp = _bedrock(judge.region, judge.url).converse(
        modelId=judge.model,
        messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": 8, "temperature": 0},
    )
    blocks = ((resp.get("output") or {}).get("message") or {}).get("content") or []
    usage = resp.get("usage") or {}
    reply = "".join(str(b.get("text") or "") for b in blocks if isinstance(b, dict))
    return reply, int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)


@lru_cache(maxsize=8)
def _bedrock(region: str | None, endpoint_url: str | None) -> Any:
    """One bedrock-runtime client per (region, endpoint), shared by the calling threads (boto3
    clients are thread-safe); the pool is as wide as judging.concurrency allows."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=MAX_CONCURRENCY,
                    read_timeout=TIMEOUT_S)  # fmt: skip
    return boto3.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config)


def chat_call(judge: Judge, prompt: str) -> tuple[str, int, int]:
    """(reply, input tokens, output tokens) of one OpenAI chat completion."""
    body = {"model": judge.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8,
            "temperature": 0}  # fmt: skip
    assert judge.url is not None  # the spec requires it for api openai-chat
    doc = post_json(judge.url.rstrip("/") + "/chat/completions", body, judge_key_env(judge.name))
    usage = doc.get("usage") or {}
    reply = str(doc["choices"][0]["message"].get("content") or "")
    return reply, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


@dataclass
class PanelResult:
    votes: dict[str, list[float]]  # per variant, the panel's score of each judged answer
    calls: int = 0
    cached: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    unjudged: int = 0  # answers with no valid vote (budget spent, errors, replies that were no verdict)
    first_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, judge: Judge, got: Mapping[str, Any]) -> None:
        """One call's reply, or its failure: tokens and cost, or the first error."""
        self.calls += 1
        if "error" in got:
            self.errors += 1
            self.first_error = self.first_error or f"{judge.name}: {got['error']}"
            return
        self.input_tokens += got["in"]
        self.output_tokens += got["out"]
        p_in, p_out = judge.price_per_1m_input_tokens, judge.price_per_1m_output_tokens
        if self.cost_usd is not None:
            self.cost_usd = (
                None if p_in is None or p_out is None else self.cost_usd + (got["in"] * p_in + got["out"] * p_out) / 1e6
            )

    def note(self, judging: Judging) -> str:
        cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "cost unknown (a judge has no price)"
        text = (
            f"judges: {len(judging.judges)} ({', '.join(j.name for j in judging.judges)}); {self.calls} calls, "
            f"{self.cached} verdicts from the cache, {self.input_tokens:,} input and {self.output_tokens:,} output "
            f"tokens, {cost}"
        )
        if self.errors:
            text += f"; {self.errors} calls failed (first: {self.first_error})"
        if self.unjudged:
            text += f"; {self.unjudged} answers got no verdict and are not in the judge score"
        return text


def judge_answers(
    judging: Judging,
    drawn: Mapping[str, Sequence[Item]],
    cache_store: Storage,
    *,
    prompt: str | None = None,
    call: Call = judge_call,
) -> PanelResult:
    """Every drawn answer through the panel, cached verdicts first, within maxCalls."""
    cache: dict[str, dict[str, Any]] = _read_cache(cache_store)
    result = PanelResult(votes={})
    plan = _Plan.of(judging, drawn, prompt or default_prompt(), cache)
    result.cached = plan.cached
    sent = plan.pending[: judging.max_calls]
    if len(plan.pending) > len(sent):
        result.notes.append(
            f"judging.maxCalls ({judging.max_calls}) reached: {len(plan.pending) - len(sent)} calls not sent"
        )
    for judge, key, got in _send(sent, call, judging.concurrency):
        result.add(judge, got)
        if "error" not in got:
            cache.setdefault(judge.name, {})[key] = got
    if sent:
        cache_store.write_bytes(CACHE_KEY, json.dumps(cache, sort_keys=True).encode())
    for variant, items in drawn.items():
        scores = [plan.majority(judging, variant, item, cache) for item in items]
        result.unjudged += scores.count(None)
        result.votes[variant] = [x for x in scores if x is not None]
    return result


@dataclass
class _Plan:
    """The calls to send (not in the cache), and each answer's cache key per judge."""

    pending: list[tuple[Judge, str, str]]  # (judge, cache key, filled prompt)
    keys: dict[tuple[str, str, str], str]  # (judge, variant, request id) -> cache key
    cached: int

    @classmethod
    def of(
        cls, judging: Judging, drawn: Mapping[str, Sequence[Item]], template: str, cache: Mapping[str, Any]
    ) -> _Plan:
        plan, queued = cls([], {}, 0), set()
        for variant, item in ((v, i) for v, items in drawn.items() for i in items):
            text = fill(template, item)
            for judge in judging.judges:
                key = hashlib.sha256(f"{judge.model}\0{text}".encode()).hexdigest()[:32]
                plan.keys[(judge.name, variant, item.request_id)] = key
                if key in cache.get(judge.name, {}):
                    plan.cached += 1
                elif (judge.name, key) not in queued:
                    queued.add((judge.name, key))
                    plan.pending.append((judge, key, text))
        return plan

    def majority(self, judging: Judging, variant: str, item: Item, cache: Mapping[str, Any]) -> float | None:
        """1, 0 or 0.5 (a split panel); None without a valid vote."""
        verdicts = [
            (cache.get(j.name, {}).get(self.keys[(j.name, variant, item.request_id)]) or {}).get("verdict")
            for j in judging.judges
        ]
        yes, no = verdicts.count("correct"), verdicts.count("incorrect")
        if yes + no == 0:
            return None
        return 1.0 if yes > no else 0.0 if no > yes else 0.5


def _send(
    jobs: Sequence[tuple[Judge, str, str]], call: Call, concurrency: int
) -> Iterator[tuple[Judge, str, dict[str, Any]]]:
    """Each call's reply ({verdict, in, out}), or {error} when it failed."""

    def one(job: tuple[Judge, str, str]) -> tuple[Judge, str, dict[str, Any]]:
        judge, key, text = job
        try:
            reply, n_in, n_out = call(judge, text)
        except Exception as err:  # unreachable, refused, malformed: no vote from this judge
            return judge, key, {"error": f"{type(err).__name__}: {err}"[:300]}
        return judge, key, {"verdict": parse_verdict(reply), "in": n_in, "out": n_out}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        yield from pool.map(one, jobs)


def _read_cache(store: Storage) -> dict[str, dict[str, Any]]:
    if not store.list_keys(CACHE_KEY):
        return {}
    try:
        doc = json.loads(store.read_bytes(CACHE_KEY))
    except ValueError:  # a damaged cache is a cold one
        return {}
    return doc if isinstance(doc, dict) else {}
