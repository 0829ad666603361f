"""A small HTTP/1.1 client for token streams: keep-alive, TLS, chunked bodies, one timestamp per recv.

Why not Locust's FastHttpUser or requests: they hand out the body in fixed blocks, so several SSE
events share one timestamp. Here every ``recv`` is stamped and the lines it completes carry that
stamp. On plain TCP the stamp is the kernel's (SO_TIMESTAMPNS: when the data reached the socket,
on the same wall clock as ``time.time()``), so a worker busy with other streams when an event
arrives does not move the event's time; under TLS, or where the kernel gives none, it is the
moment ``recv`` returns. Uses the ``socket`` and ``ssl`` modules, which gevent has patched by the
time the load generator runs, so one greenlet per request is cheap; under gevent an SSE body is
read by the C reactor of ``loadgen/_streams.c`` (``Response.read_sse``).
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from fmbench_k8s.loadgen._streams import Reactor, Stream
from fmbench_k8s.loadgen.sse import ChunkedDecoder, SseDecoder, StreamProtocolError

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr) from getaddrinfo
RECV_SIZE = 65536
MAX_HEADER = 65536
# Kernel receive timestamps (Linux): SO_TIMESTAMPNS on the socket, a struct timespec per recvmsg.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_STAMP_SPACE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("@qq")
_unpack_timespec = _TIMESPEC.unpack_from
_SOL_SOCKET = socket.SOL_SOCKET


def _original_select() -> Any:
    """The unpatched select.select: with a zero timeout it answers at once, where gevent's
    version would yield to the hub first (a whole loop iteration at high load)."""
    try:
        from gevent import monkey

        return monkey.get_original("select", "select")
    except ImportError:  # pragma: no cover - gevent is a dependency
        return select.select


_select_now = _original_select()


def gevent_patched() -> bool:
    """True in the load generator's processes (gevent has patched ``socket``)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("socket"))


class TransportError(Exception):
    """Transport-level failure; ``reason`` is the record's error string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def transport_reason(exc: BaseException) -> str:
    """Stable error reasons for socket-level failures."""
    if isinstance(exc, TransportError):
        return exc.reason
    if isinstance(exc, StreamProtocolError):
        return exc.reason
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection_reset"
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno)).lower()
        return {"econnrefused": "connection_refused", "econnreset": "connection_reset",
                "etimedout": "timeout", "ehostunreach": "host_unreachable",
                "enetunreach": "network_unreachable"}.get(name, f"os_error_{name}")  # fmt: skip
    return f"client_error_{type(exc).__name__}"


class BaseUrl:
    """scheme://host:port/base-path, split once."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid endpoint URL {url!r}: use http(s)://HOST[:PORT][/PATH]")
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.path = parts.path.rstrip("/")
        self._addrs: list[AddrInfo] | None = None
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"

    def addresses(self) -> list[AddrInfo]:
        if self._addrs is None:
            self._addrs = list(socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM))
        return self._addrs

    def forget_addresses(self) -> None:
        """Resolve again next time (the name may point elsewhere now)."""
        self._addrs = None


@dataclass(slots=True)
class SseRead:
    """What to do with an SSE response's events (``Response.read_sse``), given to
    ``Connection.request`` up front: under gevent on plain TCP the C reactor then reads the head
    and the body of a chunked 200 as one wait, and the request's greenlet wakes once.
    ``on_head`` sees the response once its head is parsed, also when the request is then cut off
    (and ``request`` does not return it)."""

    handle: Callable[[bytes, float], None]
    jsonlines: bool = False
    token: bytes | None = None
    on_tokens: Callable[[Sequence[float]], None] | None = None
    on_head: Callable[[Response], None] | None = None


class Connection:
    """One keep-alive connection; not shared between concurrent requests."""

    def __init__(
        self, base: BaseUrl, connect_timeout: float, tls_context: ssl.SSLContext | None = None,
        external_deadline: bool = False,
    ) -> None:  # fmt: skip
        self.base = base
        self.connect_timeout = connect_timeout
        self.tls_context = tls_context
        # Under gevent the caller bounds the whole request with one gevent.Timeout: a socket
        # timeout would arm and disarm a timer on every recv, a few microseconds per SSE event.
        self.external_deadline = external_deadline
        self.sock: socket.socket | None = None
        self.requests = 0  # served on the current socket
        self.kernel_stamps = False  # the current socket delivers SO_TIMESTAMPNS

    def connect(self) -> None:
        sock = self._open()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.kernel_stamps = False
        if self.base.tls:
            ctx = self.tls_context or ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=self.base.host)
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_stamps = True
        if self.external_deadline:
            sock.settimeout(None)
        self.sock = sock
        self.requests = 0

    def _open(self) -> socket.socket:
        """Connect to the first address that answers. Addresses are resolved once per base URL
        and reused: under gevent every lookup is a trip through a thread pool, which would
        contend for the GIL with the streams being timed."""
        addrs = self.base.addresses()
        last: OSError | None = None
        for family, kind, proto, _, addr in addrs:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(addr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        self.base.forget_addresses()
        raise last or OSError(f"cannot connect to {self.base.host}:{self.base.port}")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        *,
        sse: SseRead | None = None,
    ) -> tuple[float, Response]:
        """Send a request; returns (time sent, response with status and headers read). With
        ``sse``, where the C reactor reads (``reads_in_c``), a chunked 200's body has been read
        too, its events handed to ``sse`` (``Response.read_sse`` then has nothing left to do).

        A kept-alive socket the server closed while idle (EOF before any response byte) is retried
        once on a new connection: the server cannot have processed the request. A reset is not
        retried; it is recorded (the pool drops sockets the server closed before reusing them)."""
        head = [f"{method} {self.base.path}{path} HTTP/1.1", f"Host: {self.base.host_header}",
                f"Content-Length: {len(body)}"]  # fmt: skip
        head += [f"{k}: {v}" for k, v in headers.items()]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        deadline = time.time() + timeout
        for attempt in (0, 1):
            reused = self.sock is not None
            if self.sock is None:
                self.connect()
            assert self.sock is not None
            t_sent = time.time()
            try:
                if not self.external_deadline:
                    self.sock.settimeout(max(0.001, deadline - time.time()))
                self._send(payload)
                resp = Response(self, method, deadline)
                if sse is not None and self.reads_in_c():
                    resp.read_in_c(sse)  # calls on_head itself, even if then cut off
                else:
                    resp.read_head()
                    if sse is not None and sse.on_head is not None:
                        sse.on_head(resp)
            except TransportError as exc:
                self.close()
                if exc.reason != "connection_closed":
                    raise
                if reused and attempt == 0:
                    continue
                raise TransportError("connection_reset", "server closed the connection before responding") from None
            except BaseException:
                self.close()
                raise
            self.requests += 1
            return t_sent, resp
        raise AssertionError("unreachable")

    def _send(self, payload: bytes) -> None:
        """``sendall``. Under gevent, on plain TCP, the OS socket (non-blocking under gevent's
        wrapper) is tried first: a request fits the send buffer of a socket that is not sending
        anything else, and gevent's ``sendall`` would first ask the kernel for that buffer's size,
        a system call and a dozen Python calls per request."""
        assert self.sock is not None
        raw, sent = self.os_socket(), 0
        if raw is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = raw.send(payload)
        if sent < len(payload):
            self.sock.sendall(memoryview(payload)[sent:])

    def os_socket(self) -> _socket.socket | None:
        """The OS socket under gevent's wrapper, for what bypasses the wrapper: under gevent (one
        deadline for the whole request), on plain TCP; else None."""
        raw = getattr(self.sock, "_sock", None)
        return raw if self.external_deadline and isinstance(raw, _socket.socket) else None

    def reads_in_c(self) -> bool:
        """Bodies on this socket can be read by the C reactor: an OS socket with the kernel's stamps."""
        return self.kernel_stamps and self.os_socket() is not None

    def idle_closed(self) -> bool:
        """True when the server closed (or wrote to) this idle connection: do not reuse it."""
        if self.sock is None:
            return True
        try:
            readable, _, _ = _select_now([self.sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class Framing(Protocol):
    """Where a response body ends, fed what each ``recv`` returned: ``feed`` gives the body bytes
    in it, ``done`` says the end was seen, ``eof`` is told the server closed the connection."""

    done: bool

    def feed(self, data: bytes) -> bytes: ...

    def eof(self) -> None: ...


class LengthFraming:
    """A body of ``length`` bytes (Content-Length), or, with None, one that ends at the close."""

    __slots__ = ("_left", "done")

    def __init__(self, length: int | None) -> None:
        self._left = length
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        if self._left is None:
            return data
        piece = data[: self._left]
        self._left -= len(piece)
        self.done = self._left == 0
        return piece

    def eof(self) -> None:
        if self._left is not None:
            raise TransportError("truncated_stream", f"connection closed {self._left} bytes before the end")
        self.done = True


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    if ancillary:  # one message at most: SO_TIMESTAMPNS is the only option asked for
        level, kind, raw = ancillary[0]
        if level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _unpack_timespec(raw)
            return float(sec + nsec * 1e-9)
    return time.time()  # EOF, or data the kernel did not stamp


class _HubStreams:
    """The response bodies in flight in this process, read by one C reactor (loadgen/_streams.c):
    the hub watches the reactor's epoll descriptor and calls its poll() when it is readable,
    which reads every ready socket and wakes the greenlets whose bodies have ended, so an SSE
    event costs no Python. A request's greenlet sleeps until its body has ended."""

    def __init__(self) -> None:
        from gevent import get_hub
        from gevent.hub import Waiter

        self.hub = get_hub()
        self.new_waiter = Waiter
        self.reactor = Reactor()
        self.watcher = self.hub.loop.io(self.reactor.fileno(), 1)  # 1: readable
        self.watcher.start(self.reactor.poll)

    def wait(self, stream: Stream) -> None:
        """Until ``stream`` has finished; also ends when the request's deadline or the stage's
        end interrupts the greenlet (the stream then leaves the reactor)."""
        waiter: Any = self.new_waiter(self.hub)
        self.reactor.add(stream, waiter.switch)
        try:
            waiter.get()
        finally:
            self.reactor.remove(stream)


_hub_streams: _HubStreams | None = None


def _hub() -> _HubStreams:
    global _hub_streams  # noqa: PLW0603 - one reactor per process, made on first use
    if _hub_streams is None:
        _hub_streams = _HubStreams()
    return _hub_streams


def _hand_over(stream: Stream, sse: SseRead, interrupted: bool) -> None:
    """The events the C stream has decoded, to ``sse``. A protocol error in them is raised,
    unless the read was interrupted: the interruption is what the caller must see."""
    try:
        for item in stream.take():
            if item[0] is not None:
                sse.handle(item[0], item[1])
            elif sse.on_tokens is not None:  # always, as a token event needs a token marker
                sse.on_tokens(memoryview(item[1]).cast("d"))
    except StreamProtocolError:
        if not interrupted:
            raise


def _stream_failure(error: tuple[str, str] | tuple[int]) -> Exception:
    if len(error) == 1:
        (code,) = error
        return OSError(code, errno.errorcode.get(code, str(code)))
    reason, detail = error
    if reason == "malformed_sse":
        return StreamProtocolError(reason, detail)
    return TransportError(reason, detail)


class Response:
    """Status and headers, then the body as timestamped pieces (or all at once)."""

    def __init__(self, conn: Connection, method: str, deadline: float) -> None:
        self.conn = conn
        self.method = method
        self.deadline = deadline
        self.status = 0
        self.headers: dict[str, str] = {}
        self.t_first_byte: float | None = None
        self._rest = b""
        self._complete = False
        self._keep_alive = True
        self._read_in_c = False  # read_in_c read the body too

    def _recv(self) -> tuple[float, bytes]:
        sock = self.conn.sock
        if sock is None:
            raise TransportError("connection_reset", "connection closed")
        if not self.conn.external_deadline:
            left = self.deadline - time.time()
            if left <= 0:
                raise TransportError("timeout", "request deadline passed")
            sock.settimeout(left)
        if not self.conn.kernel_stamps:
            data = sock.recv(RECV_SIZE)
            return time.time(), data
        data, ancillary, _, _ = sock.recvmsg(RECV_SIZE, _STAMP_SPACE)
        return _stamp(ancillary), data

    def read_head(self) -> None:
        buf = b""
        while True:
            ts, data = self._recv()
            if not data:
                raise TransportError("connection_closed" if not buf else "malformed_http", "closed in the headers")
            if self.t_first_byte is None:
                self.t_first_byte = ts
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEADER:
                raise TransportError("malformed_http", "response headers too long")
        self._rest = buf[end + 4 :]
        self._parse_head(buf[:end])

    def _parse_head(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise TransportError("malformed_http", f"bad status line {lines[0][:60]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        conn_header = self.headers.get("connection", "").lower()
        self._keep_alive = parts[0] == "HTTP/1.1" and "close" not in conn_header
        if self.status in (100, 101):
            raise TransportError("malformed_http", f"unexpected status {self.status}")

    def read_in_c(self, sse: SseRead) -> None:
        """``read_head``, and a chunked 200's body as ``read_sse(sse)`` would, in one wait on the
        C reactor. Interrupted (deadline, cut-off), ``sse`` still gets the head and what arrived."""
        stream = self._c_stream(sse, head=True)
        interrupted = True
        try:
            _hub().wait(stream)
            interrupted = False
        finally:
            self.t_first_byte = stream.first_byte
            head = stream.head
            if head is not None:
                self._parse_head(head)
                if sse.on_head is not None:
                    sse.on_head(self)
                if stream.body:
                    self._read_in_c = True
                    _hand_over(stream, sse, interrupted)
        if head is None:  # failed in the head: the server closed (or reset) the connection
            raise _stream_failure(stream.error or ("malformed_http", "no response head"))
        if stream.body:
            self._finish_in_c(stream)
        else:
            self._rest = stream.rest

    def _framing(self) -> Framing:
        if self.method == "HEAD" or self.status in (204, 304):
            return LengthFraming(0)
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return ChunkedDecoder()
        length_header = self.headers.get("content-length")
        if length_header is None:  # the body runs until the server closes the connection
            self._keep_alive = False
            return LengthFraming(None)
        try:
            return LengthFraming(int(length_header))
        except ValueError:
            raise TransportError("malformed_http", f"Content-Length {length_header!r}") from None

    def _pieces(self) -> Iterator[tuple[float, bytes]]:
        """Body bytes as they arrive (de-chunked), each with its recv time."""
        framing = self._framing()
        ts, data = self.t_first_byte or time.time(), self._rest
        while not framing.done:
            if data:
                piece = framing.feed(data)
                if piece:
                    yield ts, piece
                if framing.done:
                    break
            ts, data = self._recv()
            if not data:
                framing.eof()
        self._complete = True

    def read_body(self, sink: Callable[[float, bytes], None]) -> None:
        """Hand every body piece (de-chunked) and its receive time to ``sink``, to the body's end."""
        for ts, piece in self._pieces():
            sink(ts, piece)

    def read_sse(self, sse: SseRead) -> None:
        """Hand the data of every SSE event (or JSON line) and the time its last byte arrived to
        ``sse.handle``, in order, to the body's end.

        Under gevent, on plain TCP, a chunked body is read by the process's C reactor
        (``_HubStreams``) and ``handle`` sees the events once the body has ended, or when the
        request is interrupted (what arrived by then, so a cut-off record keeps its times). A
        failure in the body is raised after the events before it were handled. There, with
        ``sse.token`` (``Protocol.token_marker``) and ``sse.on_tokens``, an answer token's event
        is recognized in C and only its time is kept: ``on_tokens`` gets the times of each run of
        them at once. Nothing is left to read after ``Connection.request(..., sse=sse)`` read the
        body in C."""
        if self._read_in_c:
            return
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower() and self.method != "HEAD"
        if chunked and self.conn.reads_in_c():
            self._read_sse_in_c(sse)
            return
        decoder = SseDecoder(sse.jsonlines)
        last = self.t_first_byte or time.time()

        def sink(ts: float, piece: bytes) -> None:
            nonlocal last
            last = ts
            for data in decoder.feed(piece):
                sse.handle(data, ts)

        self.read_body(sink)
        for data in decoder.finish():
            sse.handle(data, last)

    def _c_stream(self, sse: SseRead, head: bool) -> Stream:
        raw = self.conn.os_socket()
        assert raw is not None
        return Stream(raw.fileno(), sse.jsonlines, sse.token if sse.on_tokens is not None else None, head)

    def _read_sse_in_c(self, sse: SseRead) -> None:
        stream = self._c_stream(sse, head=False)
        if self._rest:
            stream.feed(self._rest, self.t_first_byte or time.time())
        interrupted = True
        try:
            if not stream.finished:
                _hub().wait(stream)
            interrupted = False
        finally:
            _hand_over(stream, sse, interrupted)
        self._finish_in_c(stream)

    def _finish_in_c(self, stream: Stream) -> None:
        if stream.error is not None:
            raise _stream_failure(stream.error)
        self._complete = True

    def read(self, limit: int = 1 << 20) -> bytes:
        out = b""
        for _, piece in self._pieces():
            if len(out) < limit:
                out += piece[: limit - len(out)]
        return out

    def release(self) -> None:
        """Return the connection for reuse if the body was read to its end, else close it."""
        if not (self._complete and self._keep_alive):
            self.conn.close()


class ConnectionPool:
    """Idle keep-alive connections to one base URL (LIFO, so warm sockets are reused first)."""

    def __init__(
        self, base: BaseUrl, connect_timeout: float = 10.0, max_idle: int = 4096, external_deadline: bool = False
    ) -> None:
        self.base = base
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.external_deadline = external_deadline
        self._idle: list[Connection] = []
        self._tls = ssl.create_default_context() if base.tls else None

    def get(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.idle_closed():
                return conn
            conn.close()
        return Connection(self.base, self.connect_timeout, self._tls, self.external_deadline)

    def put(self, conn: Connection) -> None:
        if conn.sock is not None and len(self._idle) < self.max_idle:
            self._idle.append(conn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
