"""Wire formats of the streaming APIs: the request body, and what each streamed event means. Pure.

One ``Protocol`` per API. ``event`` is called with the data of each SSE event (or JSON line) and
the time its bytes arrived; it marks content (TTFT/ITL), usage (token counts) and the API's
end-of-stream marker on the ``RequestState``. Content is the first *non-empty* text of an event.
"""

from __future__ import annotations

import json
from typing import Any

from fmbench_k8s.loadgen._streams import just_a_token
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.sse import StreamProtocolError

# The C scanner under json.loads, called directly: json.loads(bytes) first guesses the encoding and
# then matches a regex for trailing whitespace, more than half of its time on a token's event.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json(data: bytes) -> Any:
    try:
        text = data.decode()
        obj, end = _scan(text, 0)
    except (ValueError, StopIteration):  # StopIteration: no JSON value at the start
        raise StreamProtocolError("malformed_sse", f"event is not JSON: {data[:80]!r}") from None
    if end != len(text) and text[end:].strip():
        raise StreamProtocolError("malformed_sse", f"event is not JSON: {data[:80]!r}")
    return obj


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Protocol:
    """Base class; ``requires_end_marker`` says whether a stream without the marker is truncated."""

    api = ""
    path = ""
    requires_end_marker = True

    # The bytes that open an answer token's event, for the shortcut that need not decode it
    # (``OpenAIChat._just_a_token``); None: every event is decoded.
    token_marker: bytes | None = None

    def __init__(self, model: str | None = None, extra_body: dict[str, Any] | None = None) -> None:
        self.model = model
        self.extra_body = extra_body or {}

    def body(self, prompt: Prompt) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, prompt: Prompt) -> bytes:
        return json.dumps({**self.body(prompt), **self.extra_body}).encode()

    def event(self, data: bytes, ts: float, st: RequestState) -> None:
        raise NotImplementedError


def _stream_error(obj: Any) -> None:
    if isinstance(obj, dict) and obj.get("error") is not None:
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise StreamProtocolError("stream_error", str(message)[:200])


class OpenAIChat(Protocol):
    """POST {base}/chat/completions, stream with ``stream_options.include_usage``; ends with [DONE]."""

    api = "openai-chat"
    path = "/chat/completions"

    def prompt_field(self, prompt: Prompt) -> dict[str, Any]:
        return {"messages": prompt.messages}

    def body(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.prompt_field(prompt),
            "max_tokens": prompt.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.model:
            body["model"] = self.model
        return body

    def _text(self, choice: dict[str, Any]) -> Any:
        return (choice.get("delta") or {}).get("content")

    def _thought(self, choice: dict[str, Any]) -> Any:
        """Reasoning text: vLLM and SGLang with a reasoning parser send the thinking as
        ``reasoning_content`` (newer vLLM ``reasoning``) before the answer's ``content``."""
        delta = choice.get("delta") or {}
        return delta.get("reasoning_content") or delta.get("reasoning")

    # A token's event as vLLM, SGLang and OpenAI write it: ``"delta":{"content":"`` then text.
    token_marker: bytes | None = b'"delta":{"content":"'

    def _just_a_token(self, data: bytes) -> bool:
        """True for an event whose JSON would say only "one answer token" (``just_a_token`` in
        loadgen/_streams.c, which the C reader uses too), checked on the bytes: decoding was the
        largest cost of an event. Any other event is decoded. (An event cut short that is still
        balanced, only possible with brackets in its text, would count as a token where decoding
        calls it malformed.)"""
        marker = self.token_marker
        return marker is not None and just_a_token(data, marker)

    def event(self, data: bytes, ts: float, st: RequestState) -> None:
        if data == b"[DONE]":
            st.finished = True
            return
        if st.answer is None and self._just_a_token(data):
            st.content(ts)
            return
        obj = _json(data)
        if not isinstance(obj, dict):
            raise StreamProtocolError("malformed_sse", f"event is not a JSON object: {data[:80]!r}")
        if "error" in obj:
            _stream_error(obj)
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            text = self._text(choice)
            if text:  # the common case first: no reasoning lookup per answer token
                st.content(ts)
                if st.answer is not None:  # a conversation keeps the answer for its next turn
                    st.answer.append(text)
                break
            if self._thought(choice):
                st.content(ts, answer=False)
                break
        usage = obj.get("usage")
        if isinstance(usage, dict):
            _openai_usage(usage, st)


def _server_counts(st: RequestState, output: object, prompt: object) -> None:
    """The server's token counts, where it gave integers."""
    out, given = _int(output), _int(prompt)
    if out is not None:
        st.server_output_tokens = out
    if given is not None:
        st.server_prompt_tokens = given


def _openai_usage(usage: dict[str, Any], st: RequestState) -> None:
    _server_counts(st, usage.get("completion_tokens"), usage.get("prompt_tokens"))
    details = usage.get("completion_tokens_details")
    reasoning = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    if reasoning is not None:
        st.server_reasoning_tokens = reasoning


class OpenAICompletions(OpenAIChat):
    """POST {base}/completions; the text is ``choices[0].text``."""

    api = "openai-completions"
    path = "/completions"

    def prompt_field(self, prompt: Prompt) -> dict[str, Any]:
        return {"prompt": prompt.full_text}

    token_marker = None  # completions' events are always decoded

    def _text(self, choice: dict[str, Any]) -> Any:
        return choice.get("text")

    def _thought(self, choice: dict[str, Any]) -> Any:
        return None  # completions carry no reasoning field


class Tgi(Protocol):
    """POST {base}/generate_stream (Hugging Face TGI; also SageMaker TGI/LMI containers).

    Every event carries one token; the last one also ``generated_text`` and, with
    ``details: true``, ``details.generated_tokens``."""

    api = "tgi"
    path = "/generate_stream"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {"inputs": prompt.full_text, "parameters": {"max_new_tokens": prompt.max_tokens, "details": True}}

    def event(self, data: bytes, ts: float, st: RequestState) -> None:
        obj = _json(data)
        if not isinstance(obj, dict):
            raise StreamProtocolError("malformed_sse", f"event is not a JSON object: {data[:80]!r}")
        _stream_error(obj)
        token = obj.get("token")
        if isinstance(token, dict) and token.get("text") and not token.get("special"):
            st.content(ts)
            if st.answer is not None:
                st.answer.append(token["text"])
        details = obj.get("details")
        if isinstance(details, dict):
            _server_counts(st, details.get("generated_tokens"), details.get("input_length"))
        if obj.get("generated_text") is not None:
            st.finished = True


class Lmi(Tgi):
    """SageMaker LMI (DJL) containers: TGI-like JSON lines; the stream's end is its end."""

    api = "lmi"
    requires_end_marker = False

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {"inputs": prompt.full_text, "parameters": {"max_new_tokens": prompt.max_tokens}, "stream": True}


class Triton(Protocol):
    """POST {base}/v2/models/{model}/generate_stream (Triton TRT-LLM ensemble); one
    ``text_output`` per event; the stream simply ends, so output tokens are counted by the client."""

    api = "triton"
    requires_end_marker = False

    def __init__(self, model: str | None = None, extra_body: dict[str, Any] | None = None) -> None:
        super().__init__(model or "ensemble", extra_body)
        self.path = f"/v2/models/{self.model}/generate_stream"

    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {"text_input": prompt.full_text, "max_tokens": prompt.max_tokens, "stream": True}

    def event(self, data: bytes, ts: float, st: RequestState) -> None:
        obj = _json(data)
        if not isinstance(obj, dict):
            raise StreamProtocolError("malformed_sse", f"event is not a JSON object: {data[:80]!r}")
        _stream_error(obj)
        text = obj.get("text_output")
        if text:
            st.content(ts)
            if st.answer is not None:
                st.answer.append(str(text))


PROTOCOLS: dict[str, type[Protocol]] = {p.api: p for p in (OpenAIChat, OpenAICompletions, Tgi, Lmi, Triton)}


def protocol_for(api: str, model: str | None = None, extra_body: dict[str, Any] | None = None) -> Protocol:
    try:
        return PROTOCOLS[api](model, extra_body)
    except KeyError:
        raise ValueError(f"no HTTP streaming protocol for api {api!r}") from None
