"""aiohttp application: routes, streaming and process-level serving."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from fmbench_k8s.simulator import protocol
from fmbench_k8s.simulator.engine import Emit, Engine, RequestTiming
from fmbench_k8s.simulator.guard import Guards, Limits, guarded_factory, track_requests
from fmbench_k8s.simulator.metrics import CONTENT_TYPE, SimMetrics
from fmbench_k8s.simulator.params import SimParams
from fmbench_k8s.simulator.prefix_cache import PrefixCache
from fmbench_k8s.simulator.protocol import BadRequestError, EventAt, GenRequest

# Requests with images are large (a 2048×1536 photo is ~1.5 MB as a data URL); aiohttp's 1 MiB
# default would answer them 413.
MAX_BODY_BYTES = 64 << 20
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Tells nginx-style proxies (e.g. an ingress) not to buffer the stream.
    "X-Accel-Buffering": "no",
}

OnReady = Callable[[str, int], None]


@dataclass
class SimState:
    params: SimParams
    model: str
    engine: Engine
    metrics: SimMetrics
    ids: itertools.count[int] = field(default_factory=itertools.count)
    prefix_cache: PrefixCache | None = None

    async def run(self, req: GenRequest, emit: Emit | None = None) -> None:
        timing = RequestTiming(arrival_s=time.perf_counter())
        completed = False
        cached = 0
        if self.prefix_cache is not None:
            cached = min(self.prefix_cache.lookup(req.text.split()), req.prompt_tokens)
            self.metrics.prefix_cache(req.prompt_tokens, cached)
        try:
            await self.engine.generate(req.prompt_tokens - cached, req.max_tokens, emit or _no_emit, timing)
            completed = True
        finally:
            self.metrics.record(timing, req.prompt_tokens, completed)


STATE: web.AppKey[SimState] = web.AppKey("fmbench_simulator_state", SimState)
LIMITS: web.AppKey[Limits] = web.AppKey("fmbench_simulator_limits", Limits)


async def _no_emit(_i: int) -> None:
    return None


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return _json(protocol.error_body(status, message, param), status)


async def _stream(
    request: web.Request, state: SimState, req: GenRequest, at: EventAt, tail: bytes
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    write = resp.write

    async def emit(i: int) -> None:
        await write(at(i))

    try:
        await state.run(req, emit)
        if tail:
            await resp.write(tail)
        await resp.write_eof()
    except ConnectionError:
        # Client went away mid-stream; the engine already freed the slot.
        pass
    return resp


async def _read(request: web.Request) -> dict[str, object]:
    """The JSON body; a client that does not send it within the limit gets 408 (guard.py)."""
    try:
        async with asyncio.timeout(request.app[LIMITS].body_timeout_s):
            data = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body not received in time") from None
    return protocol.parse_json(data)


def _gate(state: SimState) -> web.Response | None:
    """Fault injection: the k-th generation request fails or not, by seed."""
    if state.engine.next_request_fails():
        status = state.params.error_status
        return _error(status, f"simulated error (error_rate={state.params.error_rate})")
    return None


async def _openai(request: web.Request, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await _read(request)
        req = protocol.parse_chat(body, state.params.image_tokens) if chat else protocol.parse_completion(body)
    except BadRequestError as exc:
        return _error(400, exc.message, exc.param)
    if req.model is not None and req.model != state.model:
        # vLLM answers a wrong model name with 404; mirror it so a benchmark
        # misconfiguration shows up against the simulator too.
        return _error(404, f"The model `{req.model}` does not exist.", "model")
    failed = _gate(state)
    if failed is not None:
        return failed
    req_id = f"{'chatcmpl' if chat else 'cmpl'}-sim-{next(state.ids)}"
    created = int(time.time())
    words = None
    if state.params.answer != "filler":
        req, words = protocol.echoed(req, state.params.answer)
    if req.stream:
        at, tail = protocol.openai_stream(
            req, chat, req_id, created, state.model, reasoning=state.params.reasoning_tokens, words=words
        )
        return await _stream(request, state, req, at, tail)
    await state.run(req)
    return _json(protocol.openai_response(req, chat, req_id, created, state.model, words=words))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=False)


async def _tgi(request: web.Request, stream: bool) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        req = protocol.parse_tgi(await _read(request), stream)
    except BadRequestError as exc:
        return _error(400, exc.message, exc.param)
    failed = _gate(state)
    if failed is not None:
        return failed
    if stream:
        return await _stream(request, state, req, protocol.tgi_stream(req), b"")
    await state.run(req)
    return _json(protocol.tgi_response(req))


async def tgi_generate_stream(request: web.Request) -> web.StreamResponse:
    return await _tgi(request, stream=True)


async def tgi_generate(request: web.Request) -> web.StreamResponse:
    return await _tgi(request, stream=False)


async def _triton(request: web.Request, stream: bool) -> web.StreamResponse:
    state = request.app[STATE]
    # Triton model names are usually "ensemble" etc.; echo whatever was asked.
    model = request.match_info["model"]
    try:
        req = protocol.parse_triton(await _read(request), stream)
    except BadRequestError as exc:
        return _error(400, exc.message, exc.param)
    failed = _gate(state)
    if failed is not None:
        return failed
    if stream:
        return await _stream(request, state, req, protocol.triton_stream(model), b"")
    await state.run(req)
    return _json(protocol.triton_response(req, model))


async def triton_generate_stream(request: web.Request) -> web.StreamResponse:
    return await _triton(request, stream=True)


async def triton_generate(request: web.Request) -> web.StreamResponse:
    return await _triton(request, stream=False)


async def embeddings(request: web.Request) -> web.Response:
    """OpenAI's embeddings API: each input text as a bag of words hashed into a vector
    (protocol.embed), so the cosine of two texts grows with the words they share."""
    state = request.app[STATE]
    try:
        body = await _read(request)
        texts = protocol.parse_embeddings(body)
    except BadRequestError as exc:
        return _error(400, exc.message, exc.param)
    data = [{"object": "embedding", "index": i, "embedding": protocol.embed(t)} for i, t in enumerate(texts)]
    tokens = sum(len(t.split()) for t in texts)
    doc = {
        "object": "list",
        "data": data,
        "model": state.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json(protocol.json_bytes(doc))


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    card = {
        "id": state.model,
        "object": "model",
        "created": 0,
        "owned_by": "fmbench-k8s-simulator",
        "root": state.model,
        "parent": None,
    }
    return web.json_response({"object": "list", "data": [card]})


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_app(params: SimParams, model: str, limits: Limits | None = None) -> web.Application:
    """Build the simulator app; one engine and metrics registry per app."""
    engine = Engine(params)
    sim_metrics = SimMetrics(model, params.max_num_seqs, running=lambda: engine.running, waiting=lambda: engine.waiting)
    app = web.Application(middlewares=[track_requests], client_max_size=MAX_BODY_BYTES)
    cache = PrefixCache(params.prefix_cache_blocks) if params.prefix_cache_blocks else None
    app[STATE] = SimState(params=params, model=model, engine=engine, metrics=sim_metrics, prefix_cache=cache)
    app[LIMITS] = limits or Limits()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/generate_stream", tgi_generate_stream)
    app.router.add_post("/generate", tgi_generate)
    app.router.add_post("/v2/models/{model}/generate_stream", triton_generate_stream)
    app.router.add_post("/v2/models/{model}/generate", triton_generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


class Serving:
    """A started simulator: its port, its connections' limits, and ``cleanup``."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guards: Guards) -> None:
        self.runner, self.server, self.guards = runner, server, guards
        self.port = int(server.sockets[0].getsockname()[1])

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()  # closes the open connections
        await self.server.wait_closed()


async def start(app: web.Application, host: str, port: int) -> tuple[Serving, int]:
    """Start serving ``app``; returns what to clean up and the bound port."""
    # No access log: formatting a log line per request costs more than a stream.
    # Handler cancellation: like vLLM aborting a request whose client left, a
    # disconnect frees the queue position or slot at once, not at the next write.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    assert runner.server is not None
    guards = Guards(app[LIMITS])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        guarded_factory(runner.server, guards), host, port, backlog=4096, reuse_address=True
    )
    serving = Serving(runner, server, guards)
    return serving, serving.port


async def serve(
    host: str,
    port: int,
    params: SimParams,
    model: str,
    *,
    on_ready: OnReady | None = None,
    stop: asyncio.Event | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives."""
    runner, bound = await start(create_app(params, model, limits), host, port)
    stop_event = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Only possible in the main thread; elsewhere the caller owns `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop_event.set)
            installed.append(sig)
    try:
        if on_ready is not None:
            on_ready(host, bound)
        await stop_event.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional: the stdlib loop is merely slower
        return None
    return uvloop.new_event_loop


def run(
    host: str,
    port: int,
    params: SimParams,
    model: str,
    *,
    on_ready: OnReady | None = None,
    limits: Limits | None = None,
) -> None:
    """Blocking entry point; uses uvloop when installed."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(host, port, params, model, on_ready=on_ready, limits=limits))
