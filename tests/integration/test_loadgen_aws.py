"""SageMaker and Bedrock users against responses shaped like the real services.

A local HTTP server speaks the two runtime APIs (``invoke_endpoint_with_response_stream`` and
``converse_stream``): HTTP/1.1 chunked bodies of AWS event-stream frames, hand-encoded here per
the spec (prelude with total and header lengths, prelude CRC32, string headers, payload, message
CRC32). boto3 in the workers is pointed at it with ``--endpoint-url``. SageMaker PayloadParts
split SSE lines at arbitrary places, as the real service may; the client must reassemble them.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

import numpy as np
import pytest

from fmbench_k8s.analysis.judges import Item, judge_answers
from fmbench_k8s.api.spec import Judging
from fmbench_k8s.contract.images import image_facts
from fmbench_k8s.contract.records import itl_gaps
from fmbench_k8s.loadgen.clients import make_client
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.target import Target
from fmbench_k8s.storage import LocalStorage
from tests.integration.test_loadgen_support import assert_accounting, loadgen, write_spec

pytestmark = pytest.mark.integration

PREFILL_S, ITL_S = 0.02, 0.005
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (all headers of type 7, string)."""
    head = b"".join(
        struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + head + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, payload: bytes, content_type: str = "application/json") -> bytes:
    return frame({":event-type": kind, ":content-type": content_type, ":message-type": "event"}, payload)


def _sleep_until(deadline: float) -> None:
    """Absolute deadlines, as the simulator keeps them: one late wake-up is not carried forward."""
    time.sleep(max(0.0, deadline - time.perf_counter()))


class FakeAws(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small frames must leave at once, as from the real services
    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        return None

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _start_stream(self, extra: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "fake")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"message": f"fake {code}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeAws.bodies.append(body)
        path = unquote(self.path)
        if path.startswith("/endpoints/"):
            self._sagemaker(path.split("/")[2], body)
        elif path.startswith("/model/") and path.endswith("/converse"):
            self._converse(body)
        elif path.startswith("/model/"):
            self._bedrock(path.split("/")[2], body)
        else:
            self._error(404, "UnknownOperationException")

    def _sagemaker(self, name: str, body: dict[str, Any]) -> None:
        if name == "throttled":
            self._error(429, "ThrottlingException")
            return
        n = int(body["parameters"]["max_new_tokens"])
        words = len(body["inputs"].split())
        self._start_stream({"X-Amzn-SageMaker-Content-Type": "application/json"})
        t0 = time.perf_counter()
        _sleep_until(t0 + PREFILL_S)
        for i in range(n):
            ev: dict[str, Any] = {"index": i + 1, "token": {"id": 1, "text": " tok", "logprob": 0.0, "special": False},
                                  "generated_text": None, "details": None}  # fmt: skip
            if i == n - 1:
                ev["generated_text"] = " tok" * n
                ev["details"] = {"finish_reason": "length", "generated_tokens": n, "input_length": words}
            line = b"data:" + json.dumps(ev).encode() + b"\n\n"
            cut = 7 + (i * 13) % (len(line) - 8)  # PayloadParts split lines anywhere
            for piece in (line[:cut], line[cut:]):
                self._chunk(event("PayloadPart", piece, "application/octet-stream"))
            if i < n - 1:
                _sleep_until(t0 + PREFILL_S + (i + 1) * ITL_S)
        self._chunk(b"")

    def _converse(self, body: dict[str, Any]) -> None:
        """A judge on Converse (not streamed): CORRECT when the prompt's Answer line is one of its
        Reference line's answers, INCORRECT otherwise, and no verdict for the answer "pass"."""
        (text,) = [b["text"] for b in body["messages"][-1]["content"]]
        lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        answer, refs = lines["Answer"].strip().lower(), [r.strip().lower() for r in lines["Reference"].split(" | ")]
        reply = "I cannot tell" if answer == "pass" else "CORRECT" if answer in refs else "INCORRECT"
        doc = {"output": {"message": {"role": "assistant", "content": [{"text": reply}]}}, "stopReason": "end_turn",
               "usage": {"inputTokens": len(text.split()), "outputTokens": 1, "totalTokens": len(text.split()) + 1},
               "metrics": {"latencyMs": 1}}  # fmt: skip
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _bedrock(self, model_id: str, body: dict[str, Any]) -> None:
        n = int(body["inferenceConfig"]["maxTokens"])
        content = body["messages"][-1]["content"]
        words = sum(len(b["text"].split()) for b in content if "text" in b)
        for b in content:  # an image is width × height / 750 tokens (Anthropic's rule on Bedrock)
            if "image" in b:
                image = image_facts(base64.b64decode(b["image"]["source"]["bytes"]), "image block")
                assert b["image"]["format"] == image.format
                words += image.width * image.height // 750
        self._start_stream({})
        self._chunk(event("messageStart", b'{"role":"assistant"}'))
        t0 = time.perf_counter()
        _sleep_until(t0 + PREFILL_S)
        for i in range(n):
            if model_id == "broken" and i == 2:
                self._chunk(frame({":exception-type": "modelStreamErrorException", ":content-type": "application/json",
                                   ":message-type": "exception"}, b'{"message":"model failed"}'))  # fmt: skip
                self._chunk(b"")
                return
            delta = {"contentBlockIndex": 0, "delta": {"text": " tok"}}
            self._chunk(event("contentBlockDelta", json.dumps(delta).encode()))
            if i < n - 1:
                _sleep_until(t0 + PREFILL_S + (i + 1) * ITL_S)
        self._chunk(event("contentBlockStop", b'{"contentBlockIndex":0}'))
        self._chunk(event("messageStop", b'{"stopReason":"max_tokens"}'))
        usage = {"inputTokens": words, "outputTokens": n, "totalTokens": words + n}
        meta = {"usage": usage, "metrics": {"latencyMs": 1}}
        self._chunk(event("metadata", json.dumps(meta).encode()))
        self._chunk(b"")


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAws)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    return AWS_ENV


VARIANTS = {
    "sagemaker": {"name": "sm", "endpoint": {"api": "sagemaker", "endpointName": "llm-ep", "payload": "tgi"}},
    "bedrock": {"name": "br", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude-3-haiku-20240307-v1:0"}},
}


@pytest.mark.parametrize("api", ["sagemaker", "bedrock"])
def test_aws_streams_through_master_and_workers(aws: str, aws_env: dict[str, str], tmp_path: Path, api: str) -> None:
    variant = VARIANTS[api]
    spec = write_spec(
        tmp_path / "spec.yaml", variants=[variant],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 30, "stddev": 5}, "outputTokens": {"mean": 12}},
        load={"mode": "fixed", "concurrency": {"levels": [4]}, "stageDuration": "2s"},
    )  # fmt: skip
    with loadgen(tmp_path, spec, str(variant["name"]), endpoint_url=aws, env=aws_env) as run:
        run.start()
        assert run.wait() == 0, run.master.stderr if run.master else ""
        df = assert_accounting(run)
    assert (df["outcome"] == "ok").all(), df["error"].value_counts()
    assert (df["output_tokens"] == 12).all() and set(df["token_source"]) == {"server"}
    assert df["prompt_tokens"].between(10, 50).all()
    win = df[df["in_steady_window"]]
    # The fake server answers the headers at once, then "prefills": first byte to first token is
    # the prefill; before it, boto3 builds and signs the request (a few ms, part of TTFT).
    assert abs(float((win["t_first_token"] - win["t_first_byte"]).median()) - PREFILL_S) < 0.002
    assert PREFILL_S < float(win["ttft_s"].median()) < PREFILL_S + 0.015
    gaps = np.concatenate([itl_gaps(b) for b in win["itl_s"]])
    assert len(gaps) == len(win) * 11
    assert abs(float(np.median(gaps)) - ITL_S) < 0.0015
    if api == "sagemaker":
        sent = [b for b in FakeAws.bodies if "inputs" in b]
        assert sent and all(b["stream"] is True and b["parameters"]["details"] is True for b in sent)


def test_aws_failures_have_reasons(aws: str, aws_env: dict[str, str]) -> None:
    throttled = make_client(Target("sagemaker", aws, endpoint_name="throttled", region="us-east-1", payload="tgi",
                                   extra_body={"stream": True}), pool_size=2)  # fmt: skip
    st = RequestState("r1", time.time(), 3)
    throttled.generate(Prompt("a b c", 4, 3), st)
    assert (st.outcome, st.error, st.http_status) == ("error", "http_429", 429)
    broken = make_client(Target("bedrock", aws, model_id="broken", region="us-east-1"), pool_size=2)
    st = RequestState("r2", time.time(), 3)
    broken.generate(Prompt("a b c", 8, 3), st)
    assert (st.outcome, st.error) == ("error", "stream_error_modelStreamErrorException")
    assert st.content_events == 2
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = make_client(Target("bedrock", f"http://127.0.0.1:{port}", model_id="m", region="us-east-1"), pool_size=2)
    st = RequestState("r3", time.time(), 3)
    gone.generate(Prompt("a", 2, 1), st)
    assert (st.outcome, st.error) == ("error", "connection_refused")


def test_bedrock_carries_each_prompts_images_as_image_blocks(aws: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """workload.images on Bedrock converse: each image goes as a PNG block before the text, and the
    records hold its bytes, pixels and size, and the server's token count with the image's."""
    variant = VARIANTS["bedrock"]
    sizes = [{"name": "small", "width": 300, "height": 250, "share": 0.5},
             {"name": "large", "width": 1000, "height": 750, "share": 0.5}]  # fmt: skip
    spec = write_spec(
        tmp_path / "spec.yaml", variants=[variant],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 30}, "outputTokens": {"mean": 4},
                  "images": {"sizes": sizes}},
        load={"mode": "fixed", "concurrency": {"levels": [2]}, "stageDuration": "2s"},
    )  # fmt: skip
    with loadgen(tmp_path, spec, str(variant["name"]), endpoint_url=aws, env=aws_env) as run:
        run.start()
        assert run.wait() == 0, run.master.stderr if run.master else ""
        df = assert_accounting(run)
    ok = df[df["outcome"] == "ok"]
    assert len(ok) > 20 and set(ok["image_size"]) == {"small", "large"} and (ok["images"] == 1).all()
    for name, (w, h) in {"small": (300, 250), "large": (1000, 750)}.items():
        rows = ok[ok["image_size"] == name]
        assert (rows["image_pixels"] == w * h).all()
        assert (rows["prompt_tokens"] == 30 + w * h // 750).all()  # the server's count: text and image
        assert rows["image_bytes"].between(w * h * 2.5 / 8, w * h * 3.5 / 8).all()  # ~3 bits a pixel


def test_a_bedrock_judge_answers_on_converse_and_its_tokens_are_priced(aws: str, aws_env: dict[str, str],
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """evaluation.judging with api bedrock (docs/accuracy.md): boto3's Converse, signed with the
    process's AWS identity, against a server shaped like Bedrock's."""
    judging = Judging.model_validate({"judges": [{
        "name": "haiku", "api": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0", "url": aws,
        "region": "us-east-1", "pricePer1mInputTokens": 0.25, "pricePer1mOutputTokens": 1.25,
    }]})  # fmt: skip
    answers = ["Lima", "Quito", "pass", "lima", "Bogota"]
    items = [Item(f"r{i}", "Capital of Peru?", a, ("Lima", "Lima, Peru")) for i, a in enumerate(answers)]
    got = judge_answers(judging, {"v": items}, LocalStorage(tmp_path))
    assert got.errors == 0 and got.calls == 5
    assert sorted(got.votes["v"]) == [0.0, 0.0, 1.0, 1.0] and got.unjudged == 1  # "pass" got no verdict
    assert got.output_tokens == 5 and got.input_tokens > 5 * 40
    assert got.cost_usd == pytest.approx((got.input_tokens * 0.25 + 5 * 1.25) / 1e6)
    sent = [b for b in FakeAws.bodies if "inferenceConfig" in b and b["inferenceConfig"].get("temperature") == 0]
    assert len(sent) == 5 and all(b["inferenceConfig"]["maxTokens"] == 8 for b in sent)
    again = judge_answers(judging, {"v": items}, LocalStorage(tmp_path))  # from the run's cache: nothing sent
    assert (again.calls, again.cached, again.votes) == (0, 5, got.votes)
