"""Connection limits of the simulator: a client may not hold the server open forever.

aiohttp bounds a request's size but not its pace: a connection that sends its headers a byte at a
time (slowloris), or never sends its body, stayed open for good, and file descriptors were the only
bound on how many did. Each connection here is wrapped in ``Guard``, which

- refuses connections beyond ``max_connections`` (closed at once, as a server at its limit does);
- closes a connection that has no request in progress for ``idle_timeout`` seconds: from its start
  until its first request's headers are complete, and between keep-alive requests.

A request's body is read under ``body_timeout`` in the handlers (``server._read``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Limits:
    max_connections: int = 16384
    idle_timeout_s: float = 30.0  # headers of a request, or the next one on a kept-alive connection
    body_timeout_s: float = 30.0


@dataclass
class Guards:
    """The open connections of one server."""

    limits: Limits
    open: set[Guard] = field(default_factory=set)


class Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the limits; aiohttp sees every event as before."""

    def __init__(self, inner: web.RequestHandler, guards: Guards, loop: asyncio.AbstractEventLoop) -> None:
        self._inner, self._guards, self._loop = inner, guards, loop
        self._transport: asyncio.BaseTransport | None = None
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's is no asyncio.Transport subclass
        if len(self._guards.open) >= self._guards.limits.max_connections:
            transport.close()
            return
        self._guards.open.add(self)
        self._inner.connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._guards.open:
            self._guards.open.discard(self)
            self._disarm()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None  # close the transport, as aiohttp's handler does

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- a request in progress keeps the connection; none for idle_timeout closes it ---------------
    def request_started(self) -> None:
        self._busy += 1
        self._disarm()

    def request_ended(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self._loop.call_later(self._guards.limits.idle_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._busy == 0 and self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def guarded_factory(server: web.Server, guards: Guards) -> Callable[[], Guard]:
    """The protocol factory for ``loop.create_server``: aiohttp's, behind ``guards``."""
    loop = asyncio.get_running_loop()
    return lambda: Guard(server(), guards, loop)


@web.middleware
async def track_requests(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Tells the connection's Guard that a request is in progress (its headers are complete)."""
    guard = request.transport.get_protocol() if request.transport is not None else None
    if not isinstance(guard, Guard):  # the connection is already gone
        response: web.StreamResponse = await handler(request)
        return response
    guard.request_started()
    try:
        response = await handler(request)
        return response
    finally:
        guard.request_ended()
