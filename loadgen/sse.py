"""Incremental decoders for streamed responses: HTTP/1.1 chunked bodies, lines, SSE events. Pure.

They are fed whatever bytes one ``recv`` returned and hand back what those bytes completed, so
the caller can stamp every line and event with the time its last byte arrived. (Reading fixed
1 KiB blocks instead, as Locust's ``FastHttpUser.iter_lines`` does, stamps several events with
one time and inflates TTFT; see docs/loadgen.md.)
"""

from __future__ import annotations

MAX_LINE = 1 << 24  # a single SSE line longer than 16 MiB is not a token stream


class StreamProtocolError(Exception):
    """The bytes do not follow HTTP chunked encoding or the SSE format; ``reason`` is the record's error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Transfer-Encoding: chunked, fed incrementally; ``done`` once the last chunk is read."""

    __slots__ = ("_buf", "_left", "_state", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0
        self._state = _SIZE
        self.done = False

    def eof(self) -> None:
        """The connection closed: before the last chunk, the body is truncated."""
        if not self.done:
            raise StreamProtocolError("truncated_stream", "connection closed before the last chunk")

    def feed(self, data: bytes) -> bytes:  # noqa: C901, PLR0912, PLR0915 - a state machine run per chunk: kept inline (hot path)
        """The body bytes completed by ``data`` (possibly empty)."""
        if self._state == _SIZE and not self._buf:  # the usual recv: one whole chunk, nothing else
            nl = data.find(b"\r\n", 0, 18)
            if 0 < nl < 17 and data.endswith(b"\r\n"):
                try:
                    size = int(data[:nl], 16)
                except ValueError:
                    size = -1  # a chunk extension, or garbage: the state machine below says which
                if size > 0 and nl + size + 4 == len(data):
                    return data[nl + 2 : -2]
        buf = self._buf + data if self._buf else data
        pos, end, out = 0, len(buf), []
        state, left = self._state, self._left
        while pos < end:
            if state == _DATA:
                take = min(left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                left -= take
                if left:
                    break
                state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise StreamProtocolError("malformed_http", "chunk not followed by CRLF")
                pos += 2
                state = _SIZE
            elif state == _SIZE:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > 1024:
                        raise StreamProtocolError("malformed_http", "chunk size line too long")
                    break
                size_field = buf[pos:nl].split(b";", 1)[0].strip()
                try:
                    left = int(size_field, 16)
                except ValueError:
                    raise StreamProtocolError("malformed_http", f"bad chunk size {size_field[:20]!r}") from None
                pos = nl + 2
                state = _DATA if left else _TRAILER
            elif state == _TRAILER:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                blank = nl == pos
                pos = nl + 2
                if blank:
                    state = _DONE
            else:  # _DONE: anything after the last chunk is not ours (no pipelining)
                pos = end
        self._buf = buf[pos:] if pos < end else b""
        self._state, self._left = state, left
        self.done = state == _DONE
        return out[0] if len(out) == 1 else b"".join(out)


class LineSplitter:
    """Bytes in, complete lines out (without the line end; CRLF and LF both end a line)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE:
            raise StreamProtocolError("malformed_sse", f"line longer than {MAX_LINE} bytes")
        return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def finish(self) -> bytes | None:
        """The unterminated last line, if any."""
        rest, self._pending = self._pending, b""
        return rest.rstrip(b"\r") or None


class SseParser:
    """Lines in, event data out (the ``data:`` lines of one event, joined by newlines).

    ``event:``, ``id:``, ``retry:`` and comments are accepted and ignored. With ``jsonlines``,
    a line starting with ``{`` is an event by itself (SageMaker LMI containers stream JSON lines).
    Any other line is malformed.
    """

    __slots__ = ("_data", "jsonlines")

    def __init__(self, jsonlines: bool = False) -> None:
        self._data: list[bytes] = []
        self.jsonlines = jsonlines

    def line(self, line: bytes) -> bytes | None:
        if not line:
            if not self._data:
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            self._data = []
            return data
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            return None
        if line.startswith((b":", b"event:", b"id:", b"retry:")) or line in (b"event", b"id", b"retry"):
            return None
        if self.jsonlines and line.startswith(b"{"):
            return line
        raise StreamProtocolError("malformed_sse", f"not an SSE line: {line[:60]!r}")

    @property
    def pending(self) -> bool:
        return bool(self._data)

    def finish(self) -> bytes | None:
        """An event the stream ended without a blank line after."""
        return self.line(b"")


class SseDecoder:
    """Body bytes in, event data out: ``LineSplitter`` and ``SseParser`` in one, with a shortcut
    for the usual piece, one whole event (``data: X`` and a blank line, LF or CRLF), that gives
    ``X`` without splitting lines. The load generator calls ``feed`` once per received piece."""

    __slots__ = ("_lines", "_parser")

    def __init__(self, jsonlines: bool = False) -> None:
        self._lines = LineSplitter()
        self._parser = SseParser(jsonlines)

    def feed(self, piece: bytes) -> list[bytes]:
        if piece.startswith(b"data: ") and not self._lines.pending and not self._parser.pending:
            nl = piece.find(b"\n", 6)
            end = len(piece)
            if piece[-1] == 10 and (nl == end - 2 or (nl == end - 3 and piece[-2] == 13)):  # b"\n", b"\r"
                return [piece[6 : nl - 1] if piece[nl - 1] == 13 else piece[6:nl]]
        events = []
        for line in self._lines.feed(piece):
            data = self._parser.line(line)
            if data is not None:
                events.append(data)
        return events

    def finish(self) -> list[bytes]:
        """What the body's end completes: an unterminated last line, an event without its blank line."""
        rest = self._lines.finish()
        events = [self._parser.line(rest)] if rest is not None else []
        events.append(self._parser.finish())
        return [e for e in events if e is not None]
