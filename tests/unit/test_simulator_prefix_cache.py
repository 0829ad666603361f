"""The simulator's prefix cache (fmbench_k8s/simulator/prefix_cache.py) and the shared-prefix
prompts that exercise it (workload.sharedPrefix)."""

from __future__ import annotations

from fmbench_k8s.api.spec import Workload
from fmbench_k8s.loadgen.prompts import PromptSource
from fmbench_k8s.simulator.prefix_cache import BLOCK, PrefixCache
from fmbench_k8s.simulator.tokenizer import count_tokens


def _words(tag: str, n: int) -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def test_only_whole_blocks_cached_from_the_start_are_hits() -> None:
    cache = PrefixCache(capacity=100)
    doc = _words("d", 3 * BLOCK + 5)
    assert cache.lookup(doc) == 0  # first time: nothing cached
    assert cache.lookup(doc) == 3 * BLOCK  # the partial last block is never cached
    assert cache.lookup([*doc[: 2 * BLOCK], *_words("q", 40)]) == 2 * BLOCK  # shares two blocks, then differs
    # the same block later in another prompt is no hit: a block's identity includes what precedes it
    assert cache.lookup([*_words("x", BLOCK), *doc[BLOCK : 2 * BLOCK]]) == 0


def test_least_recently_used_blocks_go_first() -> None:
    cache = PrefixCache(capacity=4)
    a, b, c = _words("a", 2 * BLOCK), _words("b", 2 * BLOCK), _words("c", 2 * BLOCK)
    cache.lookup(a)
    cache.lookup(b)
    assert cache.lookup(a) == 2 * BLOCK  # a is now the most recent
    cache.lookup(c)  # evicts b's two blocks
    assert cache.lookup(a) == 2 * BLOCK and cache.lookup(b) == 0


def test_shared_prefix_prompts_open_with_one_of_the_prefixes() -> None:
    w = Workload.model_validate({"requestsPerMinute": 60, "promptTokens": {"mean": 20}, "outputTokens": {"mean": 4},
                                 "sharedPrefix": {"prefixes": 3, "tokens": 48}})  # fmt: skip
    prompts = [PromptSource(w, f"{k}:0").next() for k in range(60)]
    openings = {" ".join(p.text.split()[:48]) for p in prompts}
    assert len(openings) == 3  # the same three prefixes for every worker and stage
    assert all(count_tokens(p.text) == p.prompt_tokens == 68 for p in prompts)
    assert len({" ".join(p.text.split()[48:]) for p in prompts}) == 60  # each question its own
    assert w.prompt_mix() == (68.0, 0.0)
    cache = PrefixCache(capacity=1000)
    hits = [cache.lookup(p.text.split()) for p in prompts]
    assert hits.count(0) == 3 and set(hits) == {0, 48}  # each prefix misses once, then always hits
