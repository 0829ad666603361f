"""The open loop's request greenlets (loadgen/runners.py): each item runs once, at most ``size``
at a time, on greenlets kept from one item to the next; killed, they free their slots."""

from __future__ import annotations

import gevent
import gevent.event

from fmbench_k8s.loadgen.runners import Runners


def test_items_run_at_most_size_at_once_on_greenlets_that_are_kept() -> None:
    running: list[int] = []
    done: list[int] = []
    peak = 0

    def work(item: int) -> None:
        nonlocal peak
        running.append(item)
        peak = max(peak, len(running))
        gevent.sleep(0.001 * (item % 3))
        running.remove(item)
        done.append(item)

    runners: Runners[int] = Runners(3, work)
    for item in range(30):
        runners.wait_available()
        runners.submit(item)
    with gevent.Timeout(10):
        while len(done) < 30:
            gevent.sleep(0.001)
    assert sorted(done) == list(range(30))
    assert peak == 3
    assert len(runners.greenlets) == 3  # reused: one greenlet per slot, not one per item
    assert all(not g.dead for g in runners.greenlets)  # idle, waiting for the next item


def test_submit_waits_for_a_free_slot() -> None:
    gate = gevent.event.Event()
    runners: Runners[int] = Runners(1, lambda item: gate.wait())
    runners.submit(1)
    gevent.sleep(0)
    later = gevent.spawn(runners.submit, 2)
    gevent.sleep(0.01)
    assert not later.dead and len(runners.greenlets) == 1  # the second waits for the first
    gate.set()
    later.join(timeout=5)
    assert later.dead and later.successful()


def test_killed_runners_free_their_slots() -> None:
    runners: Runners[int] = Runners(2, lambda item: gevent.sleep(60))
    runners.submit(1)
    runners.submit(2)
    gevent.sleep(0)
    gevent.killall(runners.greenlets, timeout=5)
    assert all(g.dead for g in runners.greenlets)
    with gevent.Timeout(5):
        runners.wait_available()  # both slots are free again
