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
