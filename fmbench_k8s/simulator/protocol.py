"""Request parsing and response encoding for the OpenAI, TGI and Triton APIs.

Parsing turns a JSON body into a protocol-neutral :class:`GenRequest` or
raises :class:`BadRequestError`.  Encoding pre-builds the bytes of the SSE events
once per request, because the token events of a request are identical (or
differ only by an index), and json.dumps per token would dominate the cost of
a stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from fmbench_k8s.contract.images import ImageError, decode_data_url, image_facts
from fmbench_k8s.simulator.params import DEFAULT_MAX_TOKENS, SimParams
from fmbench_k8s.simulator.tokenizer import TOKEN_ID, TOKEN_TEXT, count_tokens, generated_text

# Generous sanity cap: a typo like 1e9 would otherwise hold a slot for days.
MAX_TOKENS_LIMIT = 1_000_000

DONE_EVENT = b"data: [DONE]\n\n"

EventAt = Callable[[int], bytes]


class BadRequestError(Exception):
    """Invalid request body; answered with HTTP 400 and an OpenAI error."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class GenRequest:
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    model: str | None
    text: str = ""  # the prompt's text, for the prefix cache (chat: the messages' text joined)


def json_bytes(obj: object) -> bytes:
    return _dumps(obj).encode()


def _dumps(obj: object) -> str:
    # Compact separators: smaller events, and what vLLM emits too.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(obj: object) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    kinds = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}
    err = {
        "message": message,
        "type": kinds.get(status, "InternalServerError" if status >= 500 else "Error"),
        "param": param,
        "code": status,
    }
    return _dumps({"error": err}).encode()


def parse_json(raw: bytes) -> dict[str, object]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object")
    return body


def _opt_bool(body: dict[str, object], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequestError(f"'{key}' must be a boolean", key)
    return value


def _max_tokens(container: dict[str, object], *keys: str) -> int:
    for key in keys:
        value = container.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequestError(f"'{key}' must be an integer", key)
        if not 1 <= value <= MAX_TOKENS_LIMIT:
            raise BadRequestError(f"'{key}' must be in [1, {MAX_TOKENS_LIMIT}], got {value}", key)
        return value
    return DEFAULT_MAX_TOKENS


def _opt_model(body: dict[str, object]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequestError("'model' must be a string", "model")
    return model


def _include_usage(body: dict[str, object]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise BadRequestError("'stream_options' must be an object", "stream_options")
    return _opt_bool(opts, "include_usage", False)


ImageTokens = Callable[[int, int], int]
_DEFAULT_IMAGE_TOKENS: Final = SimParams().image_tokens


def _content_text(content: object, index: int, image_tokens: ImageTokens) -> tuple[str, int]:
    """A message's text, and its images' tokens."""
    if content is None:  # e.g. an assistant message that only made tool calls
        return "", 0
    if isinstance(content, str):
        return content, 0
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise BadRequestError(f"messages[{index}] text part needs a string 'text'", "messages")
                texts.append(text)
            elif part.get("type") == "image_url":
                images += _image_tokens(part.get("image_url"), index, image_tokens)
        return " ".join(texts), images
    raise BadRequestError(f"messages[{index}].content must be a string or a list of parts", "messages")


def _image_tokens(image_url: object, index: int, image_tokens: ImageTokens) -> int:
    """An image part's tokens, from the size in its data URL's PNG or JPEG header."""
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequestError(f"messages[{index}] image_url needs a data: URL (the simulator fetches nothing)",
                              "messages")  # fmt: skip
    try:
        image = image_facts(decode_data_url(url, f"messages[{index}] image_url"), f"messages[{index}] image_url")
    except ImageError as err:
        raise BadRequestError(str(err), "messages") from None
    return image_tokens(image.width, image.height)


def parse_chat(body: dict[str, object], image_tokens: ImageTokens = _DEFAULT_IMAGE_TOKENS) -> GenRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' must be a non-empty list", "messages")
    texts, images = [], 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequestError(f"messages[{i}] must be an object", "messages")
        text, tokens = _content_text(msg.get("content"), i, image_tokens)
        texts.append(text)
        images += tokens
    text = " ".join(texts)
    return GenRequest(
        prompt_tokens=count_tokens(text) + images,
        max_tokens=_max_tokens(body, "max_completion_tokens", "max_tokens"),
        stream=_opt_bool(body, "stream", False),
        include_usage=_include_usage(body),
        model=_opt_model(body),
        text=text,
    )


def _prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, str):
        return count_tokens(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return count_tokens(prompt[0])
    # A list of token ids is counted as given: lets a client pin the length.
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    raise BadRequestError(
        "'prompt' must be a string, a one-element list of strings, or a list of token ids",
        "prompt",
    )


def parse_completion(body: dict[str, object]) -> GenRequest:
    if "prompt" not in body:
        raise BadRequestError("'prompt' is required", "prompt")
    return GenRequest(
        prompt_tokens=_prompt_tokens(body["prompt"]),
        max_tokens=_max_tokens(body, "max_tokens"),
        stream=_opt_bool(body, "stream", False),
        include_usage=_include_usage(body),
        model=_opt_model(body),
        text=body["prompt"] if isinstance(body["prompt"], str) else "",
    )


def parse_tgi(body: dict[str, object], stream: bool) -> GenRequest:
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise BadRequestError("'inputs' must be a string", "inputs")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequestError("'parameters' must be an object", "parameters")
    return GenRequest(
        prompt_tokens=count_tokens(inputs),
        max_tokens=_max_tokens(params, "max_new_tokens"),
        stream=stream,
        include_usage=False,
        model=None,
    )


def parse_triton(body: dict[str, object], stream: bool) -> GenRequest:
    text = body.get("text_input")
    if not isinstance(text, str):
        raise BadRequestError("'text_input' must be a string", "text_input")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequestError("'parameters' must be an object", "parameters")
    max_tokens = _max_tokens(body, "max_tokens")
    if body.get("max_tokens") is None:
        max_tokens = _max_tokens(params, "max_tokens")
    return GenRequest(
        prompt_tokens=count_tokens(text),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=False,
        model=None,
    )


# --- encoding ---------------------------------------------------------------


def _usage(req: GenRequest, reasoning: int = 0) -> dict[str, object]:
    usage: dict[str, object] = {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": req.max_tokens,
        "total_tokens": req.prompt_tokens + req.max_tokens,
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": min(reasoning, req.max_tokens)}
    return usage


def _positional(first: bytes, middle: bytes, last: bytes, only: bytes, n: int) -> EventAt:
    final = n - 1

    def at(i: int) -> bytes:
        if 0 < i < final:
            return middle
        if final == 0:
            return only
        return first if i == 0 else last

    return at


def echoed(req: GenRequest, mode: str = "echo") -> tuple[GenRequest, list[str]]:
    """The answer of simulator answer mode echo or judge (docs/accuracy.md), word by word (at most
    max_tokens words, each a token), and the request shortened to them: the answer stops there.
    echo: the prompt's last line. judge: CORRECT when the prompt's "Answer:" line says what one of
    its "Reference:" line's answers (separated by " | ") says, in lower-case words without
    punctuation; else INCORRECT."""
    lines = req.text.strip().splitlines()
    if mode == "judge":
        said = {k: v for k, _, v in (ln.partition(":") for ln in lines) if k in ("Answer", "Reference")}
        refs = [_plain(r) for r in said.get("Reference", "").split(" | ")]
        text = "CORRECT" if _plain(said.get("Answer", "")) in refs else "INCORRECT"
    else:
        text = lines[-1] if lines else ""
    words = [f" {w}" for w in text.split()][: req.max_tokens] or [" ."]
    return dataclasses.replace(req, max_tokens=len(words)), words


EMBEDDING_DIM: Final = 64


def parse_embeddings(body: dict[str, object]) -> list[str]:
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequestError("'input' must be a string or a non-empty list of strings", "input")
    return [str(t) for t in texts]


def embed(text: str) -> list[float]:
    """A bag-of-words vector: each plain word adds 1 at its hash's place; unit length."""
    vector = [0.0] * EMBEDDING_DIM
    for word in _plain(text):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % EMBEDDING_DIM] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _plain(text: str) -> list[str]:
    return text.lower().translate(_NO_PUNCTUATION).split()


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def openai_stream(
    req: GenRequest, chat: bool, req_id: str, created: int, model: str, *, reasoning: int = 0,
    words: list[str] | None = None,
) -> tuple[EventAt, bytes]:  # fmt: skip
    """Token events and the tail (optional usage chunk, then [DONE]); a chat stream's first
    ``reasoning`` tokens are reasoning, not answer. ``words``: the answer's tokens (echo), which
    end with finish_reason stop; else filler tokens up to max_tokens."""
    head = {
        "id": req_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
    }

    def chunk(role: bool, finish: str | None, field: str = "content") -> bytes:
        choice: dict[str, object] = {"index": 0}
        if chat:
            delta = {"role": "assistant", field: TOKEN_TEXT} if role else {field: TOKEN_TEXT}
            choice["delta"] = delta
        else:
            choice["text"] = TOKEN_TEXT
        choice["logprobs"] = None
        choice["finish_reason"] = finish
        return sse({**head, "choices": [choice]})

    at = _positional(
        first=chunk(chat, None),
        middle=chunk(False, None),
        last=chunk(False, "length"),
        only=chunk(chat, "length"),
        n=req.max_tokens,
    )
    if words is not None:
        said = [_said(head, chat, i == 0, w, "stop" if i == len(words) - 1 else None) for i, w in enumerate(words)]
        at = said.__getitem__
    reasoning = min(reasoning, req.max_tokens) if chat else 0
    if reasoning:  # the first tokens think; the answer's events keep their places (and the finish)
        think = _positional(
            first=chunk(True, None, "reasoning_content"),
            middle=chunk(False, None, "reasoning_content"),
            last=chunk(False, "length" if reasoning == req.max_tokens else None, "reasoning_content"),
            only=chunk(True, "length" if reasoning == req.max_tokens else None, "reasoning_content"),
            n=reasoning,
        )
        answer = at

        def at(i: int) -> bytes:
            return think(i) if i < reasoning else answer(i)

    tail = DONE_EVENT
    if req.include_usage:
        tail = sse({**head, "choices": [], "usage": _usage(req, reasoning)}) + DONE_EVENT
    return at, tail


def _said(head: Mapping[str, object], chat: bool, role: bool, text: str, finish: str | None) -> bytes:
    choice: dict[str, object] = {"index": 0}
    if chat:
        choice["delta"] = {"role": "assistant", "content": text} if role else {"content": text}
    else:
        choice["text"] = text
    return sse({**head, "choices": [{**choice, "logprobs": None, "finish_reason": finish}]})


def openai_response(
    req: GenRequest, chat: bool, req_id: str, created: int, model: str, *, words: list[str] | None = None
) -> bytes:
    text = "".join(words) if words is not None else generated_text(req.max_tokens)
    choice: dict[str, object] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    choice["logprobs"] = None
    choice["finish_reason"] = "stop" if words is not None else "length"
    body = {
        "id": req_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(req),
    }
    return _dumps(body).encode()


_TGI_TOKEN = {"id": TOKEN_ID, "text": TOKEN_TEXT, "logprob": 0.0, "special": False}


def tgi_stream(req: GenRequest) -> EventAt:
    """TGI /generate_stream events; the last one carries the text and details."""
    n = req.max_tokens
    # Only "index" varies between ordinary events, so splice it in as bytes.
    prefix = b'data: {"index":'
    suffix = b',"token":' + _dumps(_TGI_TOKEN).encode() + b',"generated_text":null,"details":null}\n\n'
    final = sse(
        {
            "index": n,
            "token": _TGI_TOKEN,
            "generated_text": generated_text(n),
            "details": {
                "finish_reason": "length",
                "generated_tokens": n,
                "seed": None,
                "input_length": req.prompt_tokens,
            },
        }
    )

    def at(i: int) -> bytes:
        # TGI's index is 1-based.
        return final if i == n - 1 else prefix + str(i + 1).encode() + suffix

    return at


def tgi_response(req: GenRequest) -> bytes:
    n = req.max_tokens
    details = {
        "finish_reason": "length",
        "generated_tokens": n,
        "seed": None,
        "prefill": [],
        "tokens": [],
    }
    return _dumps({"generated_text": generated_text(n), "details": details}).encode()


def triton_stream(model: str) -> EventAt:
    event = sse({"model_name": model, "model_version": "1", "text_output": TOKEN_TEXT})
    return lambda _i: event


def triton_response(req: GenRequest, model: str) -> bytes:
    body = {
        "model_name": model,
        "model_version": "1",
        "text_output": generated_text(req.max_tokens),
    }
    return _dumps(body).encode()
