"""Model-server simulator (engine ``simulator``).

An OpenAI-compatible (plus TGI and Triton generate) HTTP server that does no
inference at all: every response is timed by the documented model below, so a
benchmark run against it has a known ground truth to compare its measurements
with.

Timing model
------------
All times are in seconds; the parameters are the fields of :class:`SimParams`.

1. Slots.  At most ``max_num_seqs`` requests hold a slot at once.  A request
   that arrives while all slots are held waits in a strict FIFO queue (arrival
   order); a released slot is handed directly to the head of the queue.
2. First token.  ``TTFT = queue_wait + prefill_base_s
   + prompt_tokens * prefill_s_per_token``; the prefill clock starts when the
   request gets its slot.
3. Later tokens.  Token ``k`` (k >= 1) arrives ``ITL`` after token ``k - 1``::

       ITL = decode_base_s * (1 + batch_slowdown * (running - 1) / max_num_seqs)

   where ``running`` is the number of requests holding a slot at the moment
   that token's wait starts (i.e. when token ``k - 1`` was emitted).  Tokens
   are scheduled on absolute deadlines (deadline_k = deadline_{k-1} + ITL), so
   timer granularity does not accumulate across a stream, and the engine
   learns the event loop's mean wake-up lag and sleeps that much less, so
   emitted times are unbiased (about +-1 ms per event).  A token that is
   late by up to 10 ms (e.g. a busy loop working through many due tokens) is
   made up on the following ones; if the simulator is stalled for longer (an
   overloaded host), the rest of the schedule is shifted by the stall rather
   than caught up with a burst of tokens, as a real server would be.  Neither
   happens while the simulator keeps up with its load.
4. Length.  Exactly ``max_tokens`` tokens are produced (``max_new_tokens`` for
   TGI); the default is 16 when the request does not say.  ``finish_reason``
   is always ``"length"``.  The slot is released after the last token.  With
   ``reasoning_tokens = R`` the first R tokens of a chat stream are reasoning
   (``delta.reasoning_content``, as vLLM with a reasoning parser sends them)
   and the answer starts at token R; usage counts them in
   ``completion_tokens`` and ``completion_tokens_details.reasoning_tokens``.
5. Jitter.  With ``jitter_sigma > 0`` every sleep (the prefill and each ITL) is
   multiplied by an independent draw of lognormal(0, jitter_sigma) from a
   ``random.Random(seed)``; the default sigma 0 is fully deterministic.
   Queue wait is not a sleep and is never jittered.
6. Prefix cache.  With ``prefix_cache_blocks = N > 0`` (default 0: off), a
   prompt's words are cut into blocks of 16 chained by hash
   (simulator/prefix_cache.py); the longest run of blocks from the start seen
   before is not prefilled again: ``prompt_tokens`` in 2. is reduced by
   those cached tokens.  Every full block is then cached, the least recently
   used first out beyond N.  ``vllm:prefix_cache_queries_total`` and
   ``vllm:prefix_cache_hits_total`` count the tokens looked up and found.

Tokenizer
---------
The simulator's tokenizer counts one token per whitespace-separated word of
the prompt text (``len(text.split())``); for chat requests the text content of
all messages is joined with spaces, so the count is the sum over messages.
The load generator builds its synthetic prompts out of plain words for exactly
this reason: the prompt length it asks for is the length the simulator sees.
Every generated token is the text ``" tok"``, one SSE event per token.

HTTP API
--------
``POST /v1/chat/completions`` and ``/v1/completions`` (OpenAI; ``stream``,
``stream_options.include_usage``; ``max_completion_tokens`` or ``max_tokens``;
a ``model`` other than the served one gets 404 as from vLLM),
``POST /generate_stream`` and ``/generate`` (TGI), ``POST
/v2/models/{model}/generate_stream`` and ``/generate`` (Triton generate
extension; ``max_tokens`` top-level or under ``parameters``), ``GET
/v1/models``, ``GET /health`` and ``GET /metrics`` (vLLM metric names).
Invalid bodies get 400 with an OpenAI-style ``{"error": {...}}`` body.

Fault injection
---------------
``error_rate`` is the fraction of generation requests answered immediately
with HTTP ``error_status`` (e.g. 500 or 429) instead of being served.  The
decision sequence is drawn from its own RNG seeded by ``seed``, so the k-th
generation request to arrive fails or not deterministically.

Public API
----------
``SimParams``, ``profile_for(instance_type)``, ``create_app(params, model)``,
``serve(...)``/``run(...)`` and the CLI entry ``main(argv)``.
"""

from fmbench_k8s.simulator.params import DEFAULT_MAX_TOKENS, RequestEstimate, SimParams, estimate
from fmbench_k8s.simulator.profiles import (
    DEFAULT_INSTANCE_TYPE,
    PROFILES,
    InstanceProfile,
    UnknownInstanceTypeError,
    get_profile,
    profile_for,
)
from fmbench_k8s.simulator.server import create_app, run, serve

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "DEFAULT_MAX_TOKENS",
    "PROFILES",
    "InstanceProfile",
    "RequestEstimate",
    "SimParams",
    "UnknownInstanceTypeError",
    "create_app",
    "estimate",
    "get_profile",
    "profile_for",
    "run",
    "serve",
]
