"""Simulator parameters and the pure formulas of the timing model.

Kept free of asyncio and HTTP so analysis code can compute the ground truth
(expected TTFT / ITL / end-to-end time) with the same functions the server
uses to schedule tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Used by every protocol when the request does not say how many tokens it wants.
DEFAULT_MAX_TOKENS = 16


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a slot count is always a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"SimParams.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"SimParams.{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: object, minimum: float, maximum: float = math.inf) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"SimParams.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        bounds = f"[{minimum}, {maximum}]" if math.isfinite(maximum) else f">= {minimum}"
        raise ValueError(f"SimParams.{name} must be finite and {bounds}, got {value}")


@dataclass(frozen=True, slots=True)
class SimParams:
    """Parameters of the timing model (see the package docstring).

    The defaults are a small, fast generic server meant for smoke tests; use
    :func:`fmbench_k8s.simulator.profiles.profile_for` for instance-shaped ones.
    """

    max_num_seqs: int = 8
    prefill_base_s: float = 0.010
    prefill_s_per_token: float = 0.0001
    decode_base_s: float = 0.010
    batch_slowdown: float = 0.5
    jitter_sigma: float = 0.0
    seed: int = 0
    error_rate: float = 0.0
    error_status: int = 500
    # Chat streams open with this many reasoning tokens (delta.reasoning_content, as vLLM with a
    # reasoning parser sends them) before the answer; they count in completion_tokens.
    reasoning_tokens: int = 0
    # Blocks of 16 words the prefix cache holds (simulator/prefix_cache.py); 0: no prefix cache.
    prefix_cache_blocks: int = 0
    # What an answer says (docs/accuracy.md): "filler", max_tokens filler tokens; "echo", the
    # prompt's last line, word by word, then stop: a model whose accuracy a test knows; "judge",
    # CORRECT or INCORRECT by comparing the judge prompt's answer with its references.
    answer: str = "filler"
    # An image's tokens: one per image_patch_px × image_patch_px square, rounded up each way (Qwen2-VL
    # merges 14-pixel patches 2×2: 28 px); they join the prompt's tokens and its prefill.
    image_patch_px: int = 28

    def __post_init__(self) -> None:
        if self.answer not in ("filler", "echo", "judge"):
            raise ValueError(f"SimParams.answer must be filler, echo or judge, got {self.answer!r}")
        _check_int("max_num_seqs", self.max_num_seqs, 1)
        _check_float("prefill_base_s", self.prefill_base_s, 0.0)
        _check_float("prefill_s_per_token", self.prefill_s_per_token, 0.0)
        _check_float("decode_base_s", self.decode_base_s, 0.0)
        _check_float("batch_slowdown", self.batch_slowdown, 0.0)
        _check_float("jitter_sigma", self.jitter_sigma, 0.0)
        _check_int("seed", self.seed, -(2**63))
        _check_float("error_rate", self.error_rate, 0.0, 1.0)
        _check_int("reasoning_tokens", self.reasoning_tokens, 0)
        _check_int("prefix_cache_blocks", self.prefix_cache_blocks, 0)
        _check_int("image_patch_px", self.image_patch_px, 1)
        _check_int("error_status", self.error_status, 400)
        if self.error_status > 599:
            raise ValueError(f"SimParams.error_status must be an HTTP error status 400-599, got {self.error_status}")

    def prefill_s(self, prompt_tokens: int) -> float:
        """Prefill time (TTFT minus queue wait), before jitter."""
        if prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be >= 0, got {prompt_tokens}")
        return self.prefill_base_s + prompt_tokens * self.prefill_s_per_token

    def image_tokens(self, width: int, height: int) -> int:
        """The tokens of a width × height image (see image_patch_px)."""
        return -(-width // self.image_patch_px) * -(-height // self.image_patch_px)

    def itl_s(self, running: int) -> float:
        """Inter-token latency when ``running`` requests hold a slot, before jitter."""
        if not 1 <= running <= self.max_num_seqs:
            raise ValueError(f"running must be in [1, {self.max_num_seqs}], got {running}")
        return self.decode_base_s * (1.0 + self.batch_slowdown * (running - 1) / self.max_num_seqs)


@dataclass(frozen=True, slots=True)
class RequestEstimate:
    """Model-predicted timings of one request that never queues."""

    ttft_s: float
    itl_s: float
    e2e_s: float


def estimate(params: SimParams, prompt_tokens: int, output_tokens: int, running: int = 1) -> RequestEstimate:
    """Predict TTFT/ITL/e2e for a request while ``running`` slots stay held.

    Exact (jitter aside) when the concurrency is constant and at most
    ``max_num_seqs``, e.g. a closed-loop benchmark at fixed concurrency in
    steady state.  With jitter the *median* of each sleep is unchanged.
    """
    if output_tokens < 1:
        raise ValueError(f"output_tokens must be >= 1, got {output_tokens}")
    ttft = params.prefill_s(prompt_tokens)
    itl = params.itl_s(running)
    return RequestEstimate(ttft_s=ttft, itl_s=itl, e2e_s=ttft + (output_tokens - 1) * itl)
