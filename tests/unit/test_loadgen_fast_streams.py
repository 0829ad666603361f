"""The C stream reader (loadgen/_streams.c) means what the Python decoders mean: fed the same
chunked SSE bytes, cut anywhere, it gives the same events with the stamps of the pieces that
completed them, and the same error reason where the bytes are wrong."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.loadgen._streams import Stream, just_a_token
from fmbench_k8s.loadgen.protocols import OpenAIChat
from fmbench_k8s.loadgen.sse import ChunkedDecoder, SseDecoder, StreamProtocolError
from tests.unit.test_loadgen_streams import _splits

# SSE lines: data (possibly empty, possibly with a space after the colon), fields and comments
# the parser ignores, JSON lines, and blank lines that end events.
_TEXT = st.binary(max_size=24).filter(lambda b: b"\n" not in b and b"\r" not in b)
_LINE = st.one_of(
    _TEXT.map(lambda b: b"data: " + b),
    _TEXT.map(lambda b: b"data:" + b),
    st.sampled_from([b"", b"", b": keep-alive", b"event: message", b"id: 7", b"retry: 10", b"event", b"id"]),
    _TEXT.map(lambda b: b"{" + b),
)


Events = list[tuple[bytes, float]]
Outcome = tuple[Events, str | None]  # the events, in order, with their stamps; the error reason


def _python(pieces: Events, jsonlines: bool) -> Outcome:
    """What the Python decoders give (Response.read_sse's Python path), to the first error."""
    chunked, sse = ChunkedDecoder(), SseDecoder(jsonlines)
    out: Events = []
    last = 0.0
    try:
        for data, ts in pieces:
            last = ts
            out += [(e, ts) for e in sse.feed(chunked.feed(data))]
            if chunked.done:
                break
        if not chunked.done:
            chunked.eof()
        out += [(e, last) for e in sse.finish()]
    except StreamProtocolError as exc:
        return out, exc.reason
    return out, None


def _c(pieces: Events, jsonlines: bool) -> Outcome:
    stream = Stream(-1, jsonlines)  # fed directly, never read from a socket
    for data, ts in pieces:
        if stream.feed(data, ts):
            break
    if not stream.finished:
        stream.eof()
    error = stream.error
    assert error is None or len(error) == 2
    events: Events = []
    for event, at in stream.take():
        assert event is not None and isinstance(at, float)  # without a token marker every event keeps its data
        events.append((event, at))
    return events, None if error is None else str(error[0])


def _cut(data: bytes, cuts: list[int]) -> Events:
    """``data`` cut at ``cuts`` (as the Python decoders' tests cut it), the i-th piece stamped i."""
    return [(piece, float(i)) for i, piece in enumerate(_splits(data, cuts))]


def _chunked(body: bytes, sizes: list[int], ext: bool) -> bytes:
    out, at = [], 0
    for size in sizes:
        part = body[at : at + size]
        at += size
        if part:
            out.append(b"%x%s\r\n%s\r\n" % (len(part), b";x=1" if ext else b"", part))
    if at < len(body):
        out.append(b"%X\r\n%s\r\n" % (len(body) - at, body[at:]))
    return b"".join(out) + b"0\r\nX-Trailer: y\r\n\r\n"


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINE, max_size=16), crlf=st.booleans(), jsonlines=st.booleans(), ext=st.booleans(),
       sizes=st.lists(st.integers(1, 40), max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12),
       unterminated=st.booleans())  # fmt: skip
def test_the_c_reader_gives_the_python_decoders_events_and_stamps(  # noqa: PLR0917 - hypothesis' arguments
    lines: list[bytes], crlf: bool, jsonlines: bool, ext: bool, sizes: list[int], cuts: list[int], unterminated: bool
) -> None:
    end = b"\r\n" if crlf else b"\n"
    body = b"".join(line + end for line in lines)
    if unterminated and lines:
        body = body[: -len(end)]  # the last line without its end: finish() completes it
    pieces = _cut(_chunked(body, sizes, ext), cuts)
    _same(_c(pieces, jsonlines), _python(pieces, jsonlines))


def _same(c: Outcome, python: Outcome) -> None:
    """Equal; except that where the bytes are wrong, the C reader also keeps the events completed
    by the failing piece before the wrong line (Python's decoder raises with them unreturned)."""
    (c_events, c_error), (py_events, py_error) = c, python
    assert c_error == py_error
    if py_error is None:
        assert c_events == py_events
    else:
        assert c_events[: len(py_events)] == py_events
        assert {ts for _, ts in c_events[len(py_events) :]} <= {ts for _, ts in c_events[-1:]}


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"zz\r\nhello\r\n", "malformed_http"),  # a chunk size that is not hex
        (b"\r\n", "malformed_http"),  # an empty chunk size
        (b"2\r\nhiXX", "malformed_http"),  # a chunk not followed by CRLF
        (b"1" * 1100, "malformed_http"),  # a chunk-size line that never ends
        (b"5\r\nhello\r\n", "truncated_stream"),  # closed before the last chunk
        (b"9\r\ngarbage!\n\r\n0\r\n\r\n", "malformed_sse"),  # not an SSE line
        (b"9\r\ndata: a\n\n\r\n3\r\nbad\r\n0\r\n\r\n", "malformed_sse"),  # ... after a good event
        (b"9\r\ndata: a\n\n\r\n", "truncated_stream"),  # ... an event, then the close
    ],
)
def test_the_c_reader_fails_where_the_python_decoders_fail(wire: bytes, reason: str) -> None:
    for cuts in ([], [1], list(range(len(wire)))):  # whole, in two, byte by byte
        pieces = _cut(wire, cuts)
        _same(_c(pieces, False), _python(pieces, False))
        assert _c(pieces, False)[1] == reason


def test_errors_name_what_was_wrong() -> None:
    stream = Stream(-1)
    stream.feed(b"zz;ext\r\n", 1.0)
    assert stream.finished and stream.error == ("malformed_http", "bad chunk size b'zz'")
    stream = Stream(-1)
    stream.feed(b"8\r\nnot sse\n\r\n", 1.0)
    assert stream.error == ("malformed_sse", "not an SSE line: b'not sse'")
    stream = Stream(-1)
    stream.feed(b"5\r\ndata:", 1.0)
    stream.eof()
    assert stream.error == ("truncated_stream", "connection closed before the last chunk")


def test_a_line_longer_than_the_limit_is_refused_without_holding_more() -> None:
    stream = Stream(-1)
    chunk = b"data: " + b"x" * (1 << 20)
    for _ in range(17):  # 17 MiB without a line end: more than MAX_LINE (16 MiB)
        stream.feed(b"%x\r\n%s\r\n" % (len(chunk), chunk), 1.0)
        if stream.finished:
            break
    assert stream.error == ("malformed_sse", "line longer than 16777216 bytes")


def test_events_are_taken_once_and_bytes_after_the_last_chunk_are_ignored() -> None:
    stream = Stream(-1)
    assert not stream.feed(b"9\r\ndata: a\n\n\r\n", 1.5)
    assert stream.take() == [(b"a", 1.5)] and stream.take() == []
    assert stream.feed(b"9\r\ndata: b\n\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", 2.5)
    assert stream.take() == [(b"b", 2.5)] and stream.error is None


def test_with_a_token_marker_answer_tokens_keep_only_their_stamps() -> None:
    """What OpenAIChat's shortcut calls a token (just_a_token, held to decoding by
    tests/unit/test_loadgen_streams.py) keeps only its stamp, and a run of them comes out as one
    (None, stamps as float64s); every other event keeps its data for the protocol to decode."""
    marker = OpenAIChat.token_marker
    assert marker is not None
    events = [
        b'{"choices":[{"delta":{"role":"assistant","content":""}}]}',
        b'{"choices":[{"delta":{"content":"Hi"}}]}',
        b'{"choices":[{"delta":{"content":" you"}}]}',
        b'{"choices":[{"delta":{"reasoning_content":"hm"}}]}',
        b'{"choices":[{"delta":{"content":" there"}}],"usage":{"completion_tokens":2}}',
        b'{"choices":[{"delta":{"content":"!"}}]}',
        b"[DONE]",
    ]
    stream = Stream(-1, token=marker)
    for i, event in enumerate(events):
        piece = b"data: " + event + b"\n\n"
        assert not stream.feed(b"%x\r\n%s\r\n" % (len(piece), piece), float(i))
    assert stream.feed(b"0\r\n\r\n", 9.0)
    assert stream.take() == [
        (events[0], 0.0),
        (None, struct.pack("2d", 1.0, 2.0)),
        (events[3], 3.0),
        (events[4], 4.0),
        (None, struct.pack("d", 5.0)),
        (events[6], 6.0),
    ]
    assert [just_a_token(e, marker) for e in events] == [False, True, True, False, False, True, False]
