"""One request as it happens (``RequestState``) and as it is stored (a row of records.SCHEMA). Pure."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fmbench_k8s.contract.records import OUTCOME_ERROR, OUTCOME_INCOMPLETE, OUTCOME_OK, itl_bytes


@dataclass(slots=True)
class RequestState:
    """Filled in by a client while the request runs; read as-is if it is cut off."""

    request_id: str
    t_scheduled: float
    prompt_tokens: int | None = None  # the client's count (synthetic prompts) until the server says
    t_sent: float | None = None
    t_first_byte: float | None = None
    t_first_token: float | None = None
    t_first_answer: float | None = None
    t_last_token: float | None = None
    t_end: float | None = None
    # array, not list: arrays of floats are invisible to the cyclic GC, which would otherwise
    # traverse every gap of every stream in flight on each young-generation collection.
    itl: array[float] = field(default_factory=lambda: array("d"))
    content_events: int = 0
    server_prompt_tokens: int | None = None
    server_output_tokens: int | None = None
    server_reasoning_tokens: int | None = None
    http_status: int | None = None
    finished: bool = False  # the API's end-of-stream marker was seen
    outcome: str | None = None
    error: str | None = None
    client_bound: bool = False
    bucket: str | None = None  # workload.buckets' name
    arrival: int | None = None  # the stage's global arrival number (open loop); a trace row's index
    # the answer's text, kept only for a conversation's next turn or for spec.evaluation
    answer: list[str] | None = None
    reference: tuple[str, ...] | None = None  # spec.evaluation: the dataset row's reference answers
    question: str | None = None  # spec.evaluation: the prompt's text
    turn: int | None = None  # 1-based turn of its conversation (workload.conversation)
    images: int | None = None  # images sent with the prompt; None without images
    image_bytes: int | None = None  # their encoded size, bytes
    image_pixels: int | None = None  # their width × height, summed
    image_size: str | None = None  # workload.images.sizes' name

    def content(self, ts: float, answer: bool = True) -> None:
        """A non-empty content event received at ``ts``; ``answer`` False: reasoning."""
        if answer and self.t_first_answer is None:
            self.t_first_answer = ts
        last = self.t_last_token
        if last is None:
            self.t_first_token = ts
        else:
            self.itl.append(ts - last)
        self.t_last_token = ts
        self.content_events += 1

    def answer_tokens(self, stamps: Sequence[float]) -> None:
        """``content(ts)`` for each of these answer tokens' times (in order), at once."""
        self.content(stamps[0])
        self.itl.extend(map(float.__sub__, stamps[1:], stamps))
        self.t_last_token = stamps[-1]
        self.content_events += len(stamps) - 1

    def fail(self, reason: str, ts: float) -> None:
        if self.outcome is None:
            self.outcome, self.error = OUTCOME_ERROR, reason
        if self.t_end is None:
            self.t_end = ts

    def succeed(self, ts: float) -> None:
        if self.outcome is None:
            self.outcome = OUTCOME_OK
        self.t_end = ts

    def cut_off(self, reason: str) -> None:
        """Still in flight (or never sent) when its stage ended."""
        self.outcome, self.error = OUTCOME_INCOMPLETE, reason

    @property
    def output_tokens(self) -> int:
        return self.server_output_tokens if self.server_output_tokens is not None else self.content_events

    @property
    def token_source(self) -> str:
        return "server" if self.server_output_tokens is not None else "client"

    @property
    def ttft(self) -> float | None:
        if self.t_first_token is None or self.t_sent is None:
            return None
        return self.t_first_token - self.t_sent

    @property
    def e2e(self) -> float | None:
        if self.t_last_token is None or self.t_sent is None:
            return None
        return self.t_last_token - self.t_sent

    @property
    def tpot(self) -> float | None:
        ttft, e2e, out = self.ttft, self.e2e, self.output_tokens
        if ttft is None or e2e is None or out <= 1:
            return None
        return (e2e - ttft) / (out - 1)


@dataclass(frozen=True, slots=True)
class StageContext:
    """What every row of one stage shares."""

    variant: str
    stage: int
    worker: str
    target_concurrency: float | None
    target_rate: float | None
    steady_start: float
    steady_end: float
    answer_chars: int | None = None  # spec.evaluation's maxAnswerChars; None: no answer text in records


def to_row(st: RequestState, ctx: StageContext) -> dict[str, Any]:
    """The record of ``st`` (records.SCHEMA column names)."""
    outcome = st.outcome or OUTCOME_INCOMPLETE
    itl = st.itl
    return {
        "variant": ctx.variant,
        "stage": ctx.stage,
        "target_concurrency": ctx.target_concurrency,
        "target_rate": ctx.target_rate,
        "request_id": st.request_id,
        "worker": ctx.worker,
        "t_scheduled": st.t_scheduled,
        "t_sent": st.t_sent,
        "t_first_byte": st.t_first_byte,
        "t_first_token": st.t_first_token,
        "t_first_answer": st.t_first_answer,
        "t_last_token": st.t_last_token,
        "t_end": st.t_end,
        "ttft_s": st.ttft,
        "e2e_s": st.e2e,
        "tpot_s": st.tpot,
        "itl_mean_s": sum(itl) / len(itl) if itl else None,
        "itl_max_s": max(itl) if itl else None,
        "itl_s": itl_bytes(itl),
        "prompt_tokens": st.server_prompt_tokens if st.server_prompt_tokens is not None else st.prompt_tokens,
        "bucket": st.bucket,
        "images": st.images,
        "image_bytes": st.image_bytes,
        "image_pixels": st.image_pixels,
        "image_size": st.image_size,
        "turn": st.turn,
        "output_tokens": st.output_tokens,
        "reasoning_tokens": st.server_reasoning_tokens,
        "token_source": st.token_source,
        "outcome": outcome,
        "ok": outcome == OUTCOME_OK,
        "error": st.error if outcome != OUTCOME_OK else None,
        "http_status": st.http_status,
        "in_steady_window": ctx.steady_start <= st.t_scheduled < ctx.steady_end,
        "client_bound": st.client_bound,
        "prompt": st.question[: ctx.answer_chars] if ctx.answer_chars and st.question is not None else None,
        "answer": "".join(st.answer)[: ctx.answer_chars] if ctx.answer_chars and st.answer is not None else None,
        "reference": [r[: ctx.answer_chars] for r in st.reference] if ctx.answer_chars and st.reference else None,
    }
