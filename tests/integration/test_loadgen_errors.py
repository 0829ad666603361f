"""Every kind of failure becomes a record with a reason; none is dropped.

A small misbehaving OpenAI-style server (raw sockets, so it can truncate, stall, reset and send
garbage) answers each request in one of several ways. The clients are checked one failure at a
time in this process; then a real master and two workers run against it and the reasons in the
records must match what the server did, request for request. The simulator's own error injection
(HTTP 429) and a closed port complete the set.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fmbench_k8s.loadgen.clients import make_client
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.target import Target
from tests.integration.test_loadgen_support import assert_accounting, loadgen, start_simulator, write_spec

pytestmark = pytest.mark.integration

EXPECTED_REASON = {
    "ok": None,
    "truncate": "truncated_stream",
    "no_done": "truncated_stream",
    "malformed": "malformed_sse",
    "garbage": "malformed_sse",
    "stream_error": "stream_error",
    "http_500": "http_500",
    "http_429": "http_429",
    "stall": "timeout",
    "reset": "connection_reset",
}


def _event(content: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'


class BadServer:
    """Answers request k with ``modes[k]`` (cycling); requests asking for max_tokens 2 (the
    master's warm-up) always succeed and are not counted."""

    def __init__(self, modes: list[str], tls: ssl.SSLContext | None = None) -> None:
        self.modes = itertools.cycle(modes)
        self.served: Counter[str] = Counter()
        self.tls = tls
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://localhost:{self.sock.getsockname()[1]}/v1"
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                if self.stop.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket, buf: bytes) -> tuple[dict[str, object] | None, bytes]:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None, b""
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                return None, b""
            rest += data
        return json.loads(rest[:length]), rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.closing(conn):
            while True:
                try:
                    body, buf = self._read_request(conn, buf)
                except OSError:
                    return
                if body is None:
                    return
                with self.lock:
                    mode = "ok" if body.get("max_tokens") == 2 else next(self.modes)
                    if body.get("max_tokens") != 2:
                        self.served[mode] += 1
                try:
                    if not self._answer(conn, mode):
                        return
                except OSError:
                    return

    def _answer(self, conn: socket.socket, mode: str) -> bool:
        """Send one answer; False when the connection is finished."""
        events = [_event(" tok") for _ in range(4)]
        if mode in ("http_500", "http_429"):
            status = {"http_500": b"500 Internal Server Error", "http_429": b"429 Too Many Requests"}[mode]
            body = b'{"error": {"message": "no"}}'
            conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))  # fmt: skip
            return True
        if mode == "reset":
            if self.tls is not None:
                raise AssertionError("reset is not a TLS mode")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        conn.sendall(SSE_HEAD)
        if mode == "stall":
            self.stop.wait(3.0)
            return False
        body_events = {
            "ok": [*events, USAGE, b"data: [DONE]\n\n"],
            "no_done": events,
            "truncate": events[:2],
            "malformed": [events[0], b"data: {not json\n\n"],
            "garbage": [events[0], b"this is not sse\n\n"],
            "stream_error": [events[0], b'data: {"error": {"message": "engine died"}}\n\n'],
        }[mode]
        for ev in body_events:
            conn.sendall(_chunk(ev))
            time.sleep(0.002)
        if mode == "truncate":
            return False  # close without the last chunk
        conn.sendall(b"0\r\n\r\n")
        return True


@pytest.fixture
def bad_server() -> Iterator[BadServer]:
    server = BadServer(list(EXPECTED_REASON))
    yield server
    server.close()


@pytest.mark.parametrize("mode", list(EXPECTED_REASON))
def test_each_failure_becomes_an_error_with_its_reason(mode: str) -> None:
    server = BadServer([mode])
    try:
        client = make_client(Target("openai-chat", server.url), timeout=0.5)
        for attempt in range(2):  # the second request reuses (or replaces) the connection
            st = RequestState(f"r{attempt}", time.time(), 3)
            client.generate(Prompt("a b c", 4, 3), st)
            reason = EXPECTED_REASON[mode]
            assert st.error == reason, (mode, st.error)
            assert st.outcome == ("ok" if reason is None else "error")
            assert st.t_sent is not None and st.t_end is not None and st.t_end >= st.t_sent
            if mode.startswith("http_"):
                assert st.http_status == int(mode[5:])
            if mode == "ok":
                assert (st.output_tokens, st.token_source, st.content_events) == (4, "server", 4)
    finally:
        server.close()


def test_a_closed_port_is_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(Target("tgi", f"http://127.0.0.1:{port}"))
    st = RequestState("r", time.time())
    client.generate(Prompt("a", 2, 1), st)
    assert (st.outcome, st.error) == ("error", "connection_refused")


def test_a_run_records_every_failure_with_its_reason(bad_server: BadServer, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        variants=[{"name": "bad", "endpoint": {"api": "openai-chat", "url": bad_server.url, "model": "m"}}],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 5}, "outputTokens": {"mean": 4}},
        load={"mode": "fixed", "concurrency": {"levels": [3]}, "stageDuration": "2s", "drain": "3s"},
    )
    with loadgen(tmp_path, spec, "bad") as run:
        run.start(master_args=("--request-timeout", "0.5"), worker_args=("--request-timeout", "0.5"))
        assert run.wait() == 0
        df = assert_accounting(run)
    got = Counter(df["error"].fillna("ok"))
    want: Counter[str] = Counter()
    for mode, n in bad_server.served.items():
        want[EXPECTED_REASON[mode] or "ok"] += n
    assert got == want, "records and the server disagree on what happened"
    assert set(got) == {r or "ok" for r in EXPECTED_REASON.values()}
    assert (df.loc[df["error"] == "http_429", "http_status"] == 429).all()
    end = next(e for e in run.events if e["event"] == "stage_end")
    assert sum(end["errors_by_reason"].values()) == end["errors"] == len(df) - got["ok"]


def test_simulator_error_injection_and_unreachable_endpoint(tmp_path: Path) -> None:
    sim = start_simulator("--error-rate", "0.3", "--error-status", "429", "--decode-base-s", "0.002",
                          "--prefill-base-s", "0.002")  # fmt: skip
    try:
        spec = write_spec(
            tmp_path / "spec.yaml",
            variants=[{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
            load={"mode": "fixed", "concurrency": {"levels": [4]}, "stageDuration": "1s"},
        )
        with loadgen(tmp_path, spec, "sim", endpoint_url=sim.url + "/v1") as run:
            run.start()  # a throttled warm-up request is retried
            assert run.wait() == 0
            df = assert_accounting(run)
        share = float((df["error"] == "http_429").mean())
        assert 0.15 < share < 0.45 and set(df["error"].dropna()) == {"http_429"}
        assert (df.loc[df["error"] == "http_429", "http_status"] == 429).all()
    finally:
        sim.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with loadgen(tmp_path, spec, "sim", endpoint_url=f"http://127.0.0.1:{port}/v1") as run:
        run.start(workers=0, master_args=("--ready-timeout", "1"))
        assert run.wait() == 4
        assert "endpoint unreachable: the warm-up request failed with connection_refused" in (
            run.master.stderr if run.master else "")  # fmt: skip
        errors = [e for e in run.events if e["event"] == "error"]
        assert errors and errors[0]["exit_code"] == 4


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_https_endpoints_stream_over_tls_and_untrusted_certificates_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = BadServer(["ok"], tls=ctx)
    try:
        untrusted = make_client(Target("openai-chat", server.url))
        st = RequestState("r0", time.time(), 3)
        untrusted.generate(Prompt("a b c", 4, 3), st)
        assert (st.outcome, st.error) == ("error", "tls_error")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read when the client builds its TLS context
        client = make_client(Target("openai-chat", server.url))
        for attempt in range(2):
            st = RequestState(f"r{attempt + 1}", time.time(), 3)
            client.generate(Prompt("a b c", 4, 3), st)
            assert (st.outcome, st.output_tokens, st.content_events) == ("ok", 4, 4), st.error
    finally:
        server.close()
