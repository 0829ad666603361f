"""The greenlets that run an open-loop stage's requests, kept from one request to the next.

Like gevent's ``Pool(size).spawn(work, item)`` per item, but a greenlet whose item is done waits
for the next one instead of ending: a new greenlet per request cost a ``Greenlet`` with its links,
and a fresh Python frame stack for it (an mmap and an munmap), at every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import gevent
from gevent.hub import Waiter, get_hub
from gevent.lock import Semaphore

T = TypeVar("T")


class Runners(Generic[T]):
    """At most ``size`` items run at once, each as ``work(item)`` on a greenlet of its own."""

    def __init__(self, size: int, work: Callable[[T], object]) -> None:
        self.work = work
        self.greenlets: list[gevent.Greenlet] = []  # every runner started, busy or idle (to kill them)
        self._idle: list[Waiter] = []  # runners waiting for an item
        self._slots = Semaphore(size)
        self._hub = get_hub()

    def wait_available(self) -> None:
        """Until an item can start at once (fewer than ``size`` are running)."""
        self._slots.wait()

    def submit(self, item: T) -> None:
        """Run ``work(item)``, on an idle runner if there is one; waits while ``size`` run."""
        self._slots.acquire()
        if self._idle:
            self._hub.loop.run_callback(self._idle.pop().switch, item)  # started as a spawn is
        else:
            self.greenlets.append(gevent.spawn(self._run, item))

    def _run(self, item: T) -> None:
        while True:
            try:
                self.work(item)
            finally:  # also when killed mid-item: the slot is free again
                self._slots.release()
            waiter = Waiter(self._hub)
            self._idle.append(waiter)
            item = waiter.get()
