"""The stream client: timestamps of when an event reached the socket (not when it was read), and
a malformed response as an error reason."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fmbench_k8s.loadgen.httpclient import BaseUrl, Connection, TransportError

EVENTS = (b"data: a\n\n", b"data: b\n\n")


def _serve(listener: socket.socket, sent: list[float]) -> None:
    """Answer one request with two SSE events 100 ms apart, noting when each left."""
    conn, _ = listener.accept()
    with conn:
        while b"\r\n\r\n" not in conn.recv(65536):
            pass
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in EVENTS:
            sent.append(time.time())
            conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            time.sleep(0.1)
        time.sleep(0.5)  # the end comes well after the late reader's read of the last event
        conn.sendall(b"0\r\n\r\n")


def test_events_are_stamped_on_arrival_even_when_the_reader_is_late() -> None:
    """The reader falls 200 ms behind each event (it is busy for 300 ms after each, events come
    100 ms apart): every event still carries the moment it reached the socket. (Events that a late
    read finds together share the last one's arrival: still no later than the read.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[float] = []
    server = threading.Thread(target=_serve, args=(listener, sent), daemon=True)
    server.start()
    conn = Connection(BaseUrl(f"http://127.0.0.1:{listener.getsockname()[1]}"), connect_timeout=5)
    _, resp = conn.request("POST", "/v1/chat/completions", b"{}", {}, timeout=10)
    assert conn.kernel_stamps, "plain TCP on Linux delivers SO_TIMESTAMPNS"
    stamps: list[float] = []
    read_at: list[float] = []

    def sink(ts: float, piece: bytes) -> None:
        if piece.startswith(b"data:"):
            stamps.append(ts)
            read_at.append(time.time())
            time.sleep(0.3)  # busy elsewhere while the next event arrives

    resp.read_body(sink)
    server.join(5)
    conn.close()
    listener.close()
    assert len(stamps) == len(sent) == 2
    for stamp, left in zip(stamps, sent, strict=True):
        assert left <= stamp < left + 0.03, "the kernel's arrival time, on the same clock as time.time()"
    assert read_at[1] - stamps[1] > 0.1  # what a stamp taken when recv returned would have added


def test_a_non_numeric_content_length_is_a_malformed_http_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    conn = Connection(BaseUrl(f"http://127.0.0.1:{listener.getsockname()[1]}"), connect_timeout=5)
    try:
        _, resp = conn.request("POST", "/v1/completions", b"{}", {}, timeout=10)
        with pytest.raises(TransportError) as err:
            resp.read()
        assert err.value.reason == "malformed_http" and "'abc'" in str(err.value)
    finally:
        server.join(5)
        conn.close()
        listener.close()
