"""Stream decoding (chunked, lines, SSE) and what each API's events mean (sse.py, protocols.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.protocols import OpenAIChat, OpenAICompletions, Tgi, Triton, protocol_for
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.sse import ChunkedDecoder, LineSplitter, SseDecoder, SseParser, StreamProtocolError


def _chunks(pieces: list[bytes], ext: bool = True) -> list[bytes]:
    """Each piece as one chunk (with an extension, which the decoder ignores), then the last chunk."""
    return [b"%x%s\r\n%s\r\n" % (len(p), b";ext=1" if ext else b"", p) for p in pieces if p] + [
        b"0\r\nX-Trailer: y\r\n\r\n"
    ]


def _chunked(pieces: list[bytes], ext: bool = True) -> bytes:
    return b"".join(_chunks(pieces, ext))


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.binary(min_size=0, max_size=40), max_size=12), cuts=st.lists(st.integers(0, 10_000)))
def test_chunked_decoder_handles_any_split(pieces: list[bytes], cuts: list[int]) -> None:
    dec = ChunkedDecoder()
    out = b"".join(dec.feed(part) for part in _splits(_chunked(pieces), cuts))
    assert out == b"".join(pieces)
    assert dec.done


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.binary(min_size=0, max_size=40), max_size=12), ext=st.booleans())
def test_chunked_decoder_takes_one_whole_chunk_per_feed(pieces: list[bytes], ext: bool) -> None:
    """What a server writing one event per chunk delivers, one chunk per recv (the shortcut)."""
    dec = ChunkedDecoder()
    assert [dec.feed(chunk) for chunk in _chunks(pieces, ext)] == [p for p in pieces if p] + [b""]
    assert dec.done


def test_chunked_decoder_is_not_done_before_the_last_chunk_and_rejects_garbage() -> None:
    dec = ChunkedDecoder()
    assert dec.feed(b"5\r\nhello\r\n") == b"hello"
    assert not dec.done
    with pytest.raises(StreamProtocolError, match="chunk size"):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")
    with pytest.raises(StreamProtocolError, match="CRLF"):
        ChunkedDecoder().feed(b"2\r\nhiXX")


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=10),
       cuts=st.lists(st.integers(0, 1000)), crlf=st.booleans())  # fmt: skip
def test_line_splitter_reassembles_lines_split_anywhere(lines: list[bytes], cuts: list[int], crlf: bool) -> None:
    data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)
    splitter = LineSplitter()
    got = [ln for part in _splits(data, cuts) for ln in splitter.feed(part)]
    assert got == lines
    assert splitter.finish() is None


def test_sse_parser_joins_multiline_data_and_ignores_comments_and_fields() -> None:
    parser = SseParser()
    lines = [b": keep-alive", b"event: message", b"id: 3", b"data: {\"a\":", b"data: 1}", b"", b"retry: 10", b"",
             b"data:[DONE]", b""]  # fmt: skip
    events = [e for e in (parser.line(ln) for ln in lines) if e is not None]
    assert events == [b'{"a":\n1}', b"[DONE]"]
    with pytest.raises(StreamProtocolError) as info:
        SseParser().line(b"garbage here")
    assert info.value.reason == "malformed_sse"
    assert SseParser(jsonlines=True).line(b'{"token": {"text": "x"}}') == b'{"token": {"text": "x"}}'
    unterminated = SseParser()
    assert unterminated.line(b"data: last") is None
    assert unterminated.finish() == b"last"


_SSE_DATA = st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.lists(_SSE_DATA, min_size=1, max_size=3), max_size=8), crlf=st.booleans(),
       whole=st.booleans(), cuts=st.lists(st.integers(0, 1000)))  # fmt: skip
def test_sse_decoder_gives_what_lines_and_parser_give(
    events: list[list[bytes]], crlf: bool, whole: bool, cuts: list[int]
) -> None:
    """Whole events one per piece (the shortcut) or cut anywhere: the same events as LineSplitter
    and SseParser, data lines joined by newlines."""
    end = b"\r\n" if crlf else b"\n"
    encoded = [b"".join(b"data: " + line + end for line in lines) + end for lines in events]
    pieces = encoded if whole else _splits(b"".join(encoded), cuts)
    dec = SseDecoder()
    got = [e for piece in pieces for e in dec.feed(piece)] + dec.finish()
    assert got == [b"\n".join(lines) for lines in events]


def test_sse_decoder_finishes_an_event_without_its_blank_line() -> None:
    dec = SseDecoder()
    assert dec.feed(b"data: a\n\ndata: b") == [b"a"]
    assert dec.finish() == [b"b"]
    assert dec.feed(b"data: c\r") == [] and dec.finish() == [b"c"]


def _feed(proto: object, events: list[object], start: float = 100.0, gap: float = 0.01) -> RequestState:
    st_ = RequestState("r", start - 1.0)
    st_.t_sent = start - 0.5
    for i, ev in enumerate(events):
        data = ev if isinstance(ev, bytes) else json.dumps(ev).encode()
        proto.event(data, start + i * gap, st_)  # type: ignore[attr-defined]
    return st_


class _AlwaysDecoded(OpenAIChat):
    token_marker = None


_TEXT = st.sampled_from(["", "tok", '"content":"', '\\"', '"error"', "reasoning", '"usage":{', "}", "[{"])
_DELTA = st.fixed_dictionaries(
    {}, optional={"role": st.just("assistant"), "content": _TEXT, "reasoning_content": _TEXT, "reasoning": _TEXT}
)
_CHOICE = st.fixed_dictionaries({"index": st.just(0), "delta": _DELTA}, optional={"finish_reason": st.none()})
_EVENT = st.fixed_dictionaries(
    {"id": _TEXT, "choices": st.lists(_CHOICE, max_size=2)},
    optional={
        "usage": st.none()
        | st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9), "completion_tokens": st.integers(0, 9)}),
        "error": st.none() | st.just({"message": "overloaded"}),
    },
)


def _state(proto: OpenAIChat, data: bytes) -> tuple[object, ...]:
    st_ = RequestState("r", 0.0)
    try:
        proto.event(data, 1.0, st_)
        failure = None
    except StreamProtocolError as exc:
        failure = exc.reason
    return (failure, st_.t_first_token, st_.t_first_answer, st_.content_events, st_.server_output_tokens,
            st_.server_prompt_tokens)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(event=_EVENT, compact=st.booleans(), cut=st.integers(0, 3))
def test_openai_token_shortcut_means_what_decoding_means(event: dict[str, object], compact: bool, cut: int) -> None:
    """The bytes-only shortcut for an answer token gives the state decoding the event gives, for
    any mix of content, reasoning, usage and errors, and for an event cut short."""
    data = json.dumps(event, separators=(",", ":") if compact else None).encode()
    data = data[: len(data) - cut]
    assert _state(OpenAIChat("m"), data) == _state(_AlwaysDecoded("m"), data)


def test_openai_chat_events_content_usage_and_done() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": " tok"}}]}
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, chunk, chunk, chunk,
              {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}, b"[DONE]"]  # fmt: skip
    st_ = _feed(OpenAIChat("m"), events)
    assert st_.finished and st_.content_events == 3
    assert st_.t_first_token == pytest.approx(100.01) and st_.t_last_token == pytest.approx(100.03)
    assert st_.itl == pytest.approx([0.01, 0.01])
    assert (st_.server_prompt_tokens, st_.output_tokens, st_.token_source) == (12, 3, "server")
    assert st_.ttft == pytest.approx(0.51) and st_.tpot == pytest.approx(0.01)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # vLLM's older and newer name
def test_reasoning_is_a_token_but_not_the_answer(field: str) -> None:
    think = {"choices": [{"index": 0, "delta": {field: " hmm"}}]}
    answer = {"choices": [{"index": 0, "delta": {"content": " yes"}}]}
    usage = {"prompt_tokens": 5, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 2}}
    st_ = _feed(OpenAIChat("m"), [think, think, answer, answer, {"choices": [], "usage": usage}, b"[DONE]"])
    assert st_.t_first_token == pytest.approx(100.0)  # TTFT: the first token of any kind
    assert st_.t_first_answer == pytest.approx(100.02)  # TTFO: the first answer token
    assert st_.content_events == 4 and st_.itl == pytest.approx([0.01, 0.01, 0.01])
    assert (st_.output_tokens, st_.server_reasoning_tokens) == (4, 2)
    plain = _feed(OpenAIChat("m"), [answer, answer, b"[DONE]"])
    assert plain.t_first_answer == plain.t_first_token  # no reasoning: the same token


def test_openai_errors_and_malformed_events_raise_with_reasons() -> None:
    with pytest.raises(StreamProtocolError) as info:
        _feed(OpenAIChat(), [{"error": {"message": "overloaded"}}])
    assert info.value.reason == "stream_error" and "overloaded" in info.value.detail
    with pytest.raises(StreamProtocolError) as info:
        _feed(OpenAICompletions(), [b"{not json"])
    assert info.value.reason == "malformed_sse"


def test_completions_tgi_and_triton_events() -> None:
    comp = _feed(OpenAICompletions(), [{"choices": [{"text": " a"}]}, {"choices": [{"text": " b"}]}, b"[DONE]"])
    assert comp.content_events == 2 and comp.token_source == "client" and comp.output_tokens == 2
    tok = {"index": 1, "token": {"id": 1, "text": " t", "special": False}, "generated_text": None, "details": None}
    special = {**tok, "token": {"id": 2, "text": "</s>", "special": True}}
    final = {**tok, "generated_text": " t t", "details": {"generated_tokens": 3, "input_length": 9}}
    tgi = _feed(Tgi(), [tok, special, final])
    assert tgi.finished and tgi.content_events == 2 and (tgi.output_tokens, tgi.server_prompt_tokens) == (3, 9)
    tri = _feed(Triton("ensemble"), [{"text_output": " x"}, {"text_output": ""}, {"text_output": " y"}])
    assert tri.content_events == 2 and not Triton.requires_end_marker
    assert Triton("my-model").path == "/v2/models/my-model/generate_stream"


def test_request_bodies_per_api() -> None:
    prompt = Prompt("a b c", 7, 3)
    chat = json.loads(protocol_for("openai-chat", "m", {"ignore_eos": True}).encode(prompt))
    assert chat == {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 7, "stream": True,
                    "stream_options": {"include_usage": True}, "model": "m", "ignore_eos": True}  # fmt: skip
    comp = json.loads(protocol_for("openai-completions").encode(prompt))
    assert comp["prompt"] == "a b c" and "model" not in comp
    assert json.loads(protocol_for("tgi").encode(prompt)) == {
        "inputs": "a b c", "parameters": {"max_new_tokens": 7, "details": True}}  # fmt: skip
    assert json.loads(protocol_for("triton").encode(prompt)) == {"text_input": "a b c", "max_tokens": 7, "stream": True}
    with pytest.raises(ValueError, match="no HTTP streaming protocol"):
        protocol_for("bedrock")
