"""Ports picked for a local run's children (fmbench_k8s/local/processes.py free_port): free now,
and outside the kernel's ephemeral range, whose ports any outgoing connection may take as its
source port between the pick and the child's bind."""

from __future__ import annotations

import socket

import pytest

from fmbench_k8s.local import processes
from fmbench_k8s.local.processes import END_PORT, FIRST_PORT, _ephemeral_low, free_port


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    low = _ephemeral_low()
    assert low > FIRST_PORT + 1000, "this machine's ephemeral range leaves no room below it"
    ports = [free_port() for _ in range(50)]
    assert all(FIRST_PORT <= p < low for p in ports)
    assert all(p < END_PORT for p in ports)  # clear of Kubernetes' NodePort range
    assert len(set(ports)) > 40  # drawn at random, not the same few
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("", port))  # a child listening on every address could take it


def test_a_port_taken_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))  # taken on one address: not free for every address
        held.listen()
        taken, other = held.getsockname()[1], free_port()
        draws = iter([taken, taken, other])
        monkeypatch.setattr(processes._PICK, "randrange", lambda a, b: next(draws))
        assert free_port() == other
