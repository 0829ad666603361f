"""The load generator's body reader under gevent (Response.read_body in the hub's callback): the
stamps are still the kernel's arrival times when the hub is busy, and a failure mid-stream ends
the read with its reason. Run in a child process, which gevent may patch."""

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
from fmbench_k8s.loadgen.httpclient import BaseUrl, Connection, transport_reason
blocking_sleep = monkey.get_original("time", "sleep")
conn = Connection(BaseUrl(sys.argv[1]), connect_timeout=5, external_deadline=True)
_, resp = conn.request("POST", "/v1/chat/completions", b"{}", {}, timeout=10)
stamps, read_at = [], []
def sink(ts, piece):
    stamps.append(ts)
    read_at.append(time.time())
    blocking_sleep(0.3)  # the hub itself is busy while the next event arrives
try:
    resp.read_body(sink)
    error = None
except Exception as exc:
    error = transport_reason(exc)
print(json.dumps({"stamps": stamps, "read_at": read_at, "error": error, "kernel": conn.kernel_stamps}))
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


def _run(end: bytes) -> tuple[dict[str, object], list[float]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[float] = []
    server = threading.Thread(target=_serve, args=(listener, sent, end), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url], check=False, capture_output=True, text=True, timeout=60, cwd="/tmp"
    )
    server.join(5)
    listener.close()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), sent


def test_stamps_are_arrival_times_while_the_hub_is_busy() -> None:
    got, sent = _run(b"0\r\n\r\n")
    assert got["kernel"] and got["error"] is None
    stamps, read_at = got["stamps"], got["read_at"]
    assert isinstance(stamps, list) and isinstance(read_at, list) and len(stamps) == len(sent) == 2
    for stamp, left in zip(stamps, sent, strict=True):
        assert left <= stamp < left + 0.03, "the kernel's arrival time, on the same clock as time.time()"
    assert read_at[1] - stamps[1] > 0.1  # what a stamp taken when recv returned would have added


def test_a_stream_cut_before_its_last_chunk_is_truncated() -> None:
    got, _ = _run(b"")  # the server closes without the last chunk
    assert got["error"] == "truncated_stream"
    assert isinstance(got["stamps"], list) and len(got["stamps"]) == 2
