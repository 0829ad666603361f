"""The load generator's body reader under gevent (Response.read_sse through the C reactor,
loadgen/_streams.c): the stamps are still the kernel's arrival times when the hub is busy, a
failure mid-stream ends the read with its reason after the events before it, and a request cut off
by its deadline keeps what arrived and leaves the reactor. Run in a child process, which gevent
may patch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHILD = r"""
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
from fmbench_k8s.loadgen import httpclient
from fmbench_k8s.loadgen.httpclient import BaseUrl, Connection, SseRead, transport_reason
blocking_sleep = monkey.get_original("time", "sleep")
conn = Connection(BaseUrl(sys.argv[1]), connect_timeout=5, external_deadline=True)
_, resp = conn.request("POST", "/v1/chat/completions", b"{}", {}, timeout=10)
gevent.spawn_later(0.05, blocking_sleep, 0.3)  # the hub itself is busy when the second event arrives
stamps, data, handled_at = [], [], []
def handle(event, ts):
    stamps.append(ts)
    data.append(event.decode())
    handled_at.append(time.time())
error = None
try:
    with gevent.Timeout(float(sys.argv[2])):
        resp.read_sse(SseRead(handle))
except gevent.Timeout:
    error = "timeout"
except Exception as exc:
    error = transport_reason(exc)
reactor = httpclient._hub_streams.reactor if httpclient._hub_streams else None
print(json.dumps({"stamps": stamps, "data": data, "handled_at": handled_at, "error": error,
                  "kernel": conn.kernel_stamps, "watching": reactor.watching() if reactor else None}))
"""


def _serve(listener: socket.socket, sent: list[float], end: bytes) -> None:
    conn, _ = listener.accept()
    with conn:
        while b"\r\n\r\n" not in conn.recv(65536):
            pass
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (b"data: a\n\n", b"data: b\n\n"):
            sent.append(time.time())
            conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            time.sleep(0.1)
        time.sleep(0.5)
        conn.sendall(end)


def _run(end: bytes, deadline: float = 10) -> tuple[dict[str, object], list[float]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[float] = []
    server = threading.Thread(target=_serve, args=(listener, sent, end), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    cmd = [sys.executable, "-c", CHILD, url, str(deadline)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60, cwd="/tmp")
    server.join(5)
    listener.close()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), sent


def test_stamps_are_arrival_times_while_the_hub_is_busy() -> None:
    got, sent = _run(b"0\r\n\r\n")
    assert got["kernel"] and got["error"] is None and got["watching"] == 0
    stamps, handled_at = got["stamps"], got["handled_at"]
    assert got["data"] == ["a", "b"]
    assert isinstance(stamps, list) and isinstance(handled_at, list) and len(stamps) == len(sent) == 2
    for stamp, left in zip(stamps, sent, strict=True):
        assert left <= stamp < left + 0.03, "the kernel's arrival time, on the same clock as time.time()"
    assert handled_at[1] - stamps[1] > 0.3  # the events are handled at the body's end, 0.5 s later


def test_a_stream_cut_before_its_last_chunk_is_truncated_after_its_events() -> None:
    got, _ = _run(b"")  # the server closes without the last chunk
    assert got["error"] == "truncated_stream" and got["data"] == ["a", "b"] and got["watching"] == 0


def test_a_bad_chunk_size_is_malformed_http() -> None:
    got, _ = _run(b"zz\r\n")
    assert got["error"] == "malformed_http" and got["data"] == ["a", "b"] and got["watching"] == 0


def test_a_request_cut_off_keeps_what_arrived_and_leaves_the_reactor() -> None:
    got, _ = _run(b"0\r\n\r\n", deadline=0.4)  # after both events, before the end
    assert got["error"] == "timeout" and got["data"] == ["a", "b"] and got["watching"] == 0


# -- Connection.request(..., sse=...): the head and the body in one wait -------------------------

CHILD_ONE_WAIT = r"""
from gevent import monkey
monkey.patch_all()
import json, sys
import gevent
from fmbench_k8s.loadgen import httpclient
from fmbench_k8s.loadgen.httpclient import BaseUrl, Connection, SseRead, transport_reason
conn = Connection(BaseUrl(sys.argv[1]), connect_timeout=5, external_deadline=True)
out = []
for i, deadline in enumerate(map(float, sys.argv[2:])):
    if i:
        gevent.sleep(0.3)  # the connection idles (a server that closes after each answer has closed it)
    got = {"data": [], "stamps": [], "heads": []}
    def handle(event, ts):
        got["data"].append(event.decode())
        got["stamps"].append(ts)
    sse = SseRead(handle, on_head=lambda r: got["heads"].append([r.status, r.t_first_byte]))
    try:
        with gevent.Timeout(deadline):
            _, resp = conn.request("POST", "/v1/chat/completions", b"{}", {}, timeout=10, sse=sse)
            got["status"] = resp.status
            got["body"] = resp.read().decode() if resp.status != 200 else None
            resp.read_sse(sse)
            resp.release()
    except gevent.Timeout:
        got["error"] = "timeout"
    except Exception as exc:
        got["error"] = transport_reason(exc)
    got["connected"] = conn.sock is not None
    out.append(got)
reactor = httpclient._hub_streams.reactor if httpclient._hub_streams else None
print(json.dumps({"results": out, "watching": reactor.watching() if reactor else None}))
"""

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _serve_each(listener: socket.socket, answers: list[list[bytes]], sent: list[float], close_after: bool) -> None:
    """The answers in order, each a list of writes 0.1 s apart, on kept-alive connections; with
    ``close_after``, one connection per answer."""
    pending = list(answers)
    while pending:
        conn, _ = listener.accept()
        with conn:
            while pending:
                request = b""
                while b"\r\n\r\n" not in request:
                    got = conn.recv(65536)
                    if not got:
                        break
                    request += got
                if not request:
                    break
                for piece in pending.pop(0):
                    sent.append(time.time())
                    conn.sendall(piece)
                    time.sleep(0.1)
                if close_after:
                    break


def _run_one_wait(
    answers: list[list[bytes]], deadlines: list[float], close_after: bool = False
) -> tuple[dict[str, Any], list[float]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[float] = []
    server = threading.Thread(target=_serve_each, args=(listener, answers, sent, close_after), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    cmd = [sys.executable, "-c", CHILD_ONE_WAIT, url, *map(str, deadlines)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60, cwd="/tmp")
    listener.close()
    server.join(5)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), sent


def _chunk(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def test_the_head_and_a_chunked_body_are_read_in_one_wait_with_arrival_stamps() -> None:
    # the head comes in two pieces, then two events, then the end, each 0.1 s apart
    answer = [SSE_HEAD[:20], SSE_HEAD[20:], _chunk(b"data: a\n\n"), _chunk(b"data: b\n\n"), b"0\r\n\r\n"]
    got, sent = _run_one_wait([answer, answer], [10, 10])
    assert got["watching"] == 0
    for result in got["results"]:  # the second on the kept-alive connection
        assert "error" not in result and result["status"] == 200 and result["data"] == ["a", "b"]
        [[status, first_byte]] = result["heads"]
        assert status == 200 and result["connected"]
    first_byte = got["results"][0]["heads"][0][1]
    assert sent[0] <= first_byte < sent[0] + 0.03  # the first piece's arrival, not the head's end
    for stamp, left in zip(got["results"][0]["stamps"], sent[2:4], strict=True):
        assert left <= stamp < left + 0.03


def test_an_error_status_leaves_its_body_to_the_response() -> None:
    answer = [b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\nover", b"loaded"]
    got, _ = _run_one_wait([answer, [SSE_HEAD + _chunk(b"data: a\n\n") + b"0\r\n\r\n"]], [10, 10])
    first, second = got["results"]
    assert first["status"] == 503 and first["body"] == "overloaded" and first["data"] == []
    assert second["status"] == 200 and second["data"] == ["a"] and "error" not in second


def test_a_kept_alive_connection_the_server_closed_is_retried_once() -> None:
    answer = [SSE_HEAD + _chunk(b"data: a\n\n") + b"0\r\n\r\n"]
    got, _ = _run_one_wait([answer, answer], [10, 10], close_after=True)  # one answer per connection
    assert [r.get("error") for r in got["results"]] == [None, None]
    assert [r["data"] for r in got["results"]] == [["a"], ["a"]]


def test_a_request_cut_off_in_its_body_keeps_its_head_and_events() -> None:
    answer = [SSE_HEAD, _chunk(b"data: a\n\n"), _chunk(b"data: b\n\n"), b"", b"", b"", b"0\r\n\r\n"]
    got, _ = _run_one_wait([answer], [0.35])  # after both events, before the end
    [result] = got["results"]
    assert result["error"] == "timeout" and result["data"] == ["a", "b"] and got["watching"] == 0
    assert [h[0] for h in result["heads"]] == [200] and not result["connected"]


def test_a_connection_closed_in_the_head_is_malformed_http() -> None:
    got, _ = _run_one_wait([[b"HTTP/1.1 200 OK\r\nContent-Ty"]], [10], close_after=True)
    [result] = got["results"]
    assert result["error"] == "malformed_http" and result["heads"] == []
