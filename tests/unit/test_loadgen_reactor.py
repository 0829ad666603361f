"""The C reactor (loadgen/_streams.c Reactor) on real sockets: poll() reads what is ready, and
calls each finished stream's on_finished after all the reads, so a call that adds or removes
streams (what a woken request does before the hub resumes) cannot touch a stream mid-read; one
failing call does not keep the others from their streams."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from fmbench_k8s.loadgen._streams import Reactor, Stream

BODY = b"9\r\ndata: a\n\n\r\n0\r\n\r\n"


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(4)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_finished_streams_are_handed_over_after_the_reads(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    reactor = Reactor()
    streams = [Stream(reader.fileno()) for reader, _ in pairs]
    first, second, slow, late = streams
    calls: list[Stream] = []

    def on_first(stream: Stream) -> None:
        calls.append(stream)
        reactor.remove(slow)  # as a woken request would, before the hub resumes poll()
        reactor.add(late, calls.append)

    reactor.add(first, on_first)
    reactor.add(second, calls.append)
    reactor.add(slow, calls.append)
    for _, writer in pairs[:2]:
        writer.sendall(BODY)
    pairs[2][1].sendall(BODY[:5])  # slow: the body has not ended
    reactor.poll()
    assert calls == [first, second]
    assert [data for data, _ in first.take()] == [b"a"] and first.error is None
    assert reactor.watching() == 1  # late; slow was removed and is never called
    pairs[2][1].sendall(BODY[5:])
    pairs[3][1].sendall(BODY)
    reactor.poll()
    assert calls == [first, second, late]
    assert reactor.watching() == 0


def test_one_failing_call_does_not_strand_the_others(
    pairs: list[tuple[socket.socket, socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reactor = Reactor()
    raised: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    streams = [Stream(reader.fileno()) for reader, _ in pairs[:2]]
    woken: list[Stream] = []

    def broken(stream: Stream) -> None:
        raise RuntimeError("a waiter's bug")

    reactor.add(streams[0], broken)
    reactor.add(streams[1], woken.append)
    for _, writer in pairs[:2]:
        writer.sendall(BODY)
    reactor.poll()
    assert woken == [streams[1]]
    assert [type(r.exc_value) for r in raised] == [RuntimeError]
    assert reactor.watching() == 0 and all(s.finished and s.error is None for s in streams)
