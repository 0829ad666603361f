"""Clients that run one request to completion and fill in its ``RequestState``.

``generate`` never raises for a failed request: every failure becomes ``outcome=error`` with a
reason (``http_429``, ``timeout``, ``connection_refused``, ``connection_reset``,
``truncated_stream``, ``malformed_sse``, ``stream_error``, ...). Only ``GreenletExit`` (the stage
cut the request off) propagates; the caller then records the state as ``incomplete``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fmbench_k8s.loadgen.httpclient import (
    BaseUrl,
    ConnectionPool,
    Response,
    SseRead,
    TransportError,
    gevent_patched,
    transport_reason,
)
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.protocols import Protocol, protocol_for
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.sse import SseDecoder, StreamProtocolError
from fmbench_k8s.loadgen.target import Target

log = logging.getLogger("fmbench.loadgen")
DEFAULT_TIMEOUT_S = 600.0


class Client:
    """One per worker process; safe to call from many greenlets at once."""

    api = ""

    def encode(self, prompt: Prompt) -> bytes | None:
        """The request's body, made ahead of ``generate`` (which then sends it as it is); None
        where the client makes its request itself."""
        return None

    def generate(self, prompt: Prompt, st: RequestState, body: bytes | None = None) -> None:
        """Run the request for ``prompt``; ``body``: ``encode(prompt)``, made earlier."""
        raise NotImplementedError

    def close(self) -> None:
        return None


def _finish_stream(st: RequestState, requires_end_marker: bool) -> None:
    now = time.time()
    if requires_end_marker and not st.finished:
        st.fail("truncated_stream", now)
    elif st.content_events == 0 and not st.server_output_tokens:
        st.fail("empty_response", now)
    else:
        st.succeed(now)


class HttpStreamClient(Client):
    """OpenAI chat/completions, TGI and Triton over HTTP/1.1 keep-alive connections."""

    def __init__(self, target: Target, timeout: float = DEFAULT_TIMEOUT_S, connect_timeout: float = 10.0) -> None:
        if target.url is None:
            raise ValueError(f"api {target.api} needs an endpoint URL")
        self.api = target.api
        self.protocol: Protocol = protocol_for(target.api, target.model, target.extra_body)
        self.gevent = gevent_patched()
        self.pool = ConnectionPool(BaseUrl(target.url), connect_timeout, external_deadline=self.gevent)
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **target.headers}

    def encode(self, prompt: Prompt) -> bytes:
        return self.protocol.encode(prompt)

    def generate(self, prompt: Prompt, st: RequestState, body: bytes | None = None) -> None:
        if not self.gevent:
            self._generate(prompt, st, body)
            return
        import gevent

        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            self._generate(prompt, st, body)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            st.fail("timeout", time.time())
        finally:
            timer.close()

    def _generate(self, prompt: Prompt, st: RequestState, body: bytes | None) -> None:
        body = self.encode(prompt) if body is None else body
        conn = self.pool.get()
        event = self.protocol.event

        def on_head(resp: Response) -> None:
            st.t_first_byte, st.http_status = resp.t_first_byte, resp.status

        # a kept answer (conversations, evaluation) needs every event decoded
        token = self.protocol.token_marker if st.answer is None else None
        sse = SseRead(lambda data, ts: event(data, ts, st), token=token, on_tokens=st.answer_tokens, on_head=on_head)
        try:
            st.t_sent = time.time()
            _, resp = conn.request("POST", self.protocol.path, body, self.headers, self.timeout, sse=sse)
            if resp.status >= 400:
                detail = resp.read(4096)
                resp.release()
                log.debug("request %s: HTTP %s %s", st.request_id, resp.status, detail[:200])
                st.fail(f"http_{resp.status}", time.time())
                return
            resp.read_sse(sse)
            resp.release()
            _finish_stream(st, self.protocol.requires_end_marker)
        except (TransportError, StreamProtocolError, OSError) as exc:
            conn.close()
            st.fail(transport_reason(exc), time.time())
        except BaseException:
            conn.close()  # cut off mid-stream (GreenletExit): the socket is in an unknown state
            raise
        finally:
            self.pool.put(conn)

    def close(self) -> None:
        self.pool.close()


def _boto_client(service: str, target: Target, pool_size: int, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=max(10, pool_size),
        retries={"total_max_attempts": 1},  # a retried request would hide throttling and skew latency
        connect_timeout=10,
        read_timeout=timeout,
        tcp_keepalive=True,
    )
    return boto3.session.Session().client(
        service, region_name=target.region or "us-east-1", endpoint_url=target.url, config=config
    )


def _aws_failure(exc: Exception) -> tuple[str, int | None]:
    from botocore import exceptions as bex

    if isinstance(exc, bex.EventStreamError):
        code = exc.response.get("Error", {}).get("Code", "")
        return (f"stream_error_{code}" if code else "stream_error"), None
    if isinstance(exc, bex.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (f"http_{status}" if status else "aws_error"), status
    if isinstance(exc, (bex.ReadTimeoutError, bex.ConnectTimeoutError)):
        return "timeout", None
    if isinstance(exc, bex.EndpointConnectionError):
        return "connection_refused", None
    if isinstance(exc, bex.ConnectionClosedError):
        return "connection_reset", None
    if isinstance(exc, bex.ResponseStreamingError):
        return "truncated_stream", None
    if isinstance(exc, bex.NoCredentialsError):
        return "no_credentials", None
    if isinstance(exc, (TransportError, StreamProtocolError, OSError)):
        return transport_reason(exc), None
    return f"client_error_{type(exc).__name__}", None


class SageMakerClient(Client):
    """``invoke_endpoint_with_response_stream``: PayloadPart bytes carry the container's own stream
    (TGI or OpenAI SSE, or LMI JSON lines), and a part may end mid-line: lines are reassembled."""

    api = "sagemaker"

    def __init__(self, target: Target, pool_size: int, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = target
        proto_api = {"tgi": "tgi", "openai-chat": "openai-chat", "lmi": "lmi"}[target.payload]
        self.protocol = protocol_for(proto_api, target.model, target.extra_body)
        self.client = _boto_client("sagemaker-runtime", target, pool_size, timeout)

    def encode(self, prompt: Prompt) -> bytes:
        return self.protocol.encode(prompt)

    def generate(self, prompt: Prompt, st: RequestState, body: bytes | None = None) -> None:
        body = self.encode(prompt) if body is None else body
        st.t_sent = time.time()
        try:
            resp = self.client.invoke_endpoint_with_response_stream(
                EndpointName=self.target.endpoint_name, Body=body, ContentType="application/json",
                Accept="application/json",
            )  # fmt: skip
            st.t_first_byte = time.time()
            st.http_status = resp["ResponseMetadata"]["HTTPStatusCode"]
            decoder, event = SseDecoder(jsonlines=True), self.protocol.event
            ts = st.t_first_byte
            for item in resp["Body"]:
                ts = time.time()
                part = item.get("PayloadPart")
                if part is None:
                    continue
                for data in decoder.feed(part.get("Bytes", b"")):
                    event(data, ts, st)
            for data in decoder.finish():
                event(data, ts, st)
            _finish_stream(st, self.protocol.requires_end_marker)
        except Exception as exc:
            reason, status = _aws_failure(exc)
            if status is not None:
                st.http_status = status
            st.fail(reason, time.time())


def converse_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The prompt as Bedrock converse messages: its history's turns, then the user's, whose
    images go before its text as image blocks (boto3 sends their bytes base64-encoded)."""
    roles = ("user", "assistant")
    turns = [{"role": roles[i % 2], "content": [{"text": t}]} for i, t in enumerate(prompt.history)]
    images = [{"image": {"format": i.format, "source": {"bytes": i.data}}} for i in prompt.images]
    return [*turns, {"role": "user", "content": [*images, {"text": prompt.text}]}]


class BedrockClient(Client):
    """``converse_stream``: text from contentBlockDelta events, token counts from the final
    ``metadata`` event's usage (its absence means the stream was cut)."""

    api = "bedrock"

    def __init__(self, target: Target, pool_size: int, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = target
        self.client = _boto_client("bedrock-runtime", target, pool_size, timeout)

    def generate(self, prompt: Prompt, st: RequestState, body: bytes | None = None) -> None:
        st.t_sent = time.time()
        try:
            resp = self.client.converse_stream(
                modelId=self.target.model_id,
                messages=converse_messages(prompt),
                inferenceConfig={"maxTokens": prompt.max_tokens},
            )
            st.t_first_byte = time.time()
            st.http_status = resp["ResponseMetadata"]["HTTPStatusCode"]
            for item in resp["stream"]:
                ts = time.time()
                delta = item.get("contentBlockDelta")
                if delta is not None:
                    text = (delta.get("delta") or {}).get("text")
                    if text:
                        st.content(ts)
                        if st.answer is not None:
                            st.answer.append(text)
                    continue
                meta = item.get("metadata")
                if meta is not None:
                    usage = meta.get("usage") or {}
                    if isinstance(usage.get("outputTokens"), int):
                        st.server_output_tokens = usage["outputTokens"]
                    if isinstance(usage.get("inputTokens"), int):
                        st.server_prompt_tokens = usage["inputTokens"]
                    st.finished = True
            _finish_stream(st, requires_end_marker=True)
        except Exception as exc:
            reason, status = _aws_failure(exc)
            if status is not None:
                st.http_status = status
            st.fail(reason, time.time())


def make_client(target: Target, pool_size: int = 64, timeout: float = DEFAULT_TIMEOUT_S) -> Client:
    if target.api == "sagemaker":
        return SageMakerClient(target, pool_size, timeout)
    if target.api == "bedrock":
        return BedrockClient(target, pool_size, timeout)
    return HttpStreamClient(target, timeout)
