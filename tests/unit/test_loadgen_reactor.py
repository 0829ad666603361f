"""The C reactor (loadgen/_streams.c Reactor) on real sockets: poll() reads what is ready, to what
the kernel holds (the set is edge-triggered), and calls each finished stream's on_finished after
all the reads, so a call that adds or removes streams (what a woken request does before the hub
resumes) cannot touch a stream mid-read; one failing call does not keep the others from their
streams."""

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


def test_a_stream_is_read_to_what_the_kernel_holds_in_one_poll(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """The set is edge-triggered: a socket is reported once per arrival, so poll() reads each one
    until it is empty, also past its 64 KiB read buffer; else the rest would wait for a next
    arrival that may never come."""
    reader, writer = pairs[0]
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    payload = b"x" * 40_000
    event = b"data: " + payload + b"\n\n"
    body = (b"%x\r\n" % len(event) + event + b"\r\n") * 4 + b"0\r\n\r\n"
    assert len(body) > 2 * 65536
    writer.sendall(body)
    reactor = Reactor()
    stream = Stream(reader.fileno())
    calls: list[Stream] = []
    reactor.add(stream, calls.append)  # the data is there before the stream is: still reported
    reactor.poll()
    assert calls == [stream] and stream.error is None
    assert [data for data, _ in stream.take()] == [payload] * 4


def test_a_close_queued_behind_the_last_bytes_is_read_in_the_same_poll(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """The peer's close arrives with the bytes before it, so no later arrival reports it: the poll
    that reads those bytes reads on to the close (the stream is cut off, not left to time out)."""
    reader, writer = pairs[0]
    writer.sendall(BODY[:12])
    writer.shutdown(socket.SHUT_WR)
    reactor = Reactor()
    stream = Stream(reader.fileno())
    calls: list[Stream] = []
    reactor.add(stream, calls.append)
    reactor.poll()
    assert calls == [stream]
    assert stream.error == ("truncated_stream", "connection closed before the last chunk")
    assert [data for data, _ in stream.take()] == [b"a"]
