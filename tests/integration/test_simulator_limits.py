"""The simulator's connection limits, against the real process over loopback sockets: a client
that dribbles its headers, never sends its body or opens connections without end cannot hold the
server (docs/security.md, "Simulator")."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.integration.test_simulator_server import MODEL, Sim, _start_sim, _stop_sim

pytestmark = pytest.mark.integration

IDLE_S = 1.0
CAP = 4


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    started = _start_sim("--idle-timeout", str(IDLE_S), "--max-connections", str(CAP), "--decode-base-s", "0.001")
    yield started
    _stop_sim(started)


def _connect(sim: Sim) -> socket.socket:
    parts = urlsplit(sim.url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _closed(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset) rather than answering."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _completion(sock: socket.socket) -> bytes:
    body = json.dumps({"model": MODEL, "prompt": "a b c", "max_tokens": 2}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        assert chunk, reply
        reply += chunk
    return reply


def test_a_client_dribbling_its_headers_is_cut_off_while_others_are_served(sim: Sim) -> None:
    slow = _connect(sim)
    started = time.monotonic()
    slow.settimeout(0.2)
    for byte in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
        try:
            slow.send(bytes([byte]))
        except OSError:
            break  # closed under us: what the test waits for
        try:
            if slow.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
    else:
        pytest.fail("the server kept a connection that never finished its headers")
    assert time.monotonic() - started >= IDLE_S  # it had its idle time, no less
    with _connect(sim) as ok:
        assert _completion(ok).startswith(b"HTTP/1.1 200")


def test_a_request_whose_body_never_comes_gets_408(sim: Sim) -> None:
    with _connect(sim) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply


def test_connections_beyond_the_cap_are_closed_and_the_server_recovers(sim: Sim) -> None:
    held = [_connect(sim) for _ in range(CAP)]
    try:
        assert _completion(held[0]).startswith(b"HTTP/1.1 200")  # the server has room for these
        with _connect(sim) as extra:
            assert _closed(extra)
    finally:
        for sock in held:
            sock.close()

    def served() -> bool:  # the server sees the closes asynchronously: retry until it has
        with _connect(sim) as sock:
            try:
                return _completion(sock).startswith(b"HTTP/1.1 200")
            except (AssertionError, ConnectionResetError):
                return False

    deadline = time.monotonic() + 30
    while not served():
        assert time.monotonic() < deadline, "the server did not take connections again after the others closed"
        time.sleep(0.1)
