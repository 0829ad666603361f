"""The C stream reader (loadgen/_streams.c) means what the Python decoders mean: fed the same
chunked SSE bytes, cut anywhere, it gives the same events with the stamps of the pieces that
completed them, and the same error reason where the bytes are wrong."""

from __future__ import annotations

import struct
from typing import cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fmbench_k8s.loadgen._streams import Stream, just_a_token
from fmbench_k8s.loadgen.httpclient import Connection, Response, TransportError
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
    return _taken(stream)


def _taken(stream: Stream) -> Outcome:
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


# -- the response head (Stream(head=True)): Connection.request's head and body in one wait --------

_HEADER = st.one_of(
    st.sampled_from([
        b"Transfer-Encoding: chunked", b"transfer-encoding:chunked", b" TRANSFER-ENCODING : Chunked ",
        b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: identity", b"Content-Length: 0",
        b"Content-Type: text/event-stream", b"Connection: close", b"X-Note: transfer-encoding: chunked",
    ]),
    # any other line, not blank (a blank line ends the head)
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r")),
)  # fmt: skip
_STATUS = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.0 200 OK", b"HTTP/1.1 503 Busy",
                           b"HTTP/1.1 2000 X", b"HTTP/1.1 201 Created", b"HTTP/1.1 0200 OK"])  # fmt: skip


def _python_head(head: bytes) -> tuple[int, bool] | None:
    """Response's reading of a head: (status, a chunked body), or None where it refuses it."""
    resp = Response(cast(Connection, None), "POST", 0.0)
    try:
        resp._parse_head(head)
    except TransportError:
        return None
    return resp.status, "chunked" in resp.headers.get("transfer-encoding", "").lower()


@settings(max_examples=400, deadline=None)
@given(status=_STATUS, headers=st.lists(_HEADER, max_size=5), lines=st.lists(_LINE, max_size=6),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))  # fmt: skip
@example(status=b"HTTP/1.1 200 OK", headers=[b"X-Note: transfer-encoding: chunked"], lines=[], cuts=[])
def test_the_head_is_read_as_response_reads_it_and_only_a_chunked_200_goes_on_in_c(
    status: bytes, headers: list[bytes], lines: list[bytes], cuts: list[int]
) -> None:
    head = b"\r\n".join([status, *headers])
    body = _chunked(b"".join(line + b"\n" for line in lines), [7], ext=False)
    pieces = [(data, ts) for data, ts in _cut(head + b"\r\n\r\n" + body, cuts) if data]  # a recv is never empty
    stream, fed = Stream(-1, False, None, True), b""
    for data, ts in pieces:
        fed += data
        if stream.feed(data, ts):
            break
    assert stream.head == head and stream.first_byte == pieces[0][1]
    if stream.body:  # decoded in C: Response calls it a chunked 200 too, and decodes it the same
        assert _python_head(head) == (200, True)
        at, rest = len(head) + 4, []
        for data, ts in pieces:
            if at < len(data):
                rest.append((data[max(0, at) :], ts))
            at -= len(data)
        _same(_taken(stream), _python(rest, False))
    else:  # Response reads the body: what came with the head, then what is still in the socket
        assert stream.finished and stream.error is None and stream.rest == fed[len(head) + 4 :]
        assert not _a_chunked_200(status, headers)


def _a_chunked_200(status: bytes, headers: list[bytes]) -> bool:
    """The rule the C reader goes on by, spelled out: status 200 on HTTP/1.1 and exactly one header
    named Transfer-Encoding (the name before the first colon; a value that mentions it is not one),
    whose value says chunked."""
    named = [h.partition(b":") for h in headers if b":" in h]
    values = [value for name, _, value in named if name.strip().lower() == b"transfer-encoding"]
    return status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 200") and len(values) == 1 and b"chunked" in values[0].lower()


def test_a_head_cut_by_the_close_or_too_long_fails_as_response_fails() -> None:
    for wire, reason in ((b"", "connection_closed"), (b"HTTP/1.1 200 OK\r\n", "malformed_http")):
        stream = Stream(-1, False, None, True)
        if wire:
            stream.feed(wire, 1.0)
        stream.eof()
        assert stream.finished and stream.head is None and stream.error is not None and stream.error[0] == reason
    stream = Stream(-1, False, None, True)
    stream.feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, 1.0)
    assert stream.error == ("malformed_http", "response headers too long") and stream.head is None
