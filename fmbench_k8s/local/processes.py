"""Child processes of a local run: started in their own process group, logged to files, waited
for by a readiness line, and always stopped (a local run must leave nothing behind)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PICK = random.SystemRandom()  # not the seedable module random: parallel runs must not pick alike
# free_port's range: above the ports Kubernetes components bind by default (the test node's
# kubelet 10248/10250, kube-proxy 10249/10256, ...) and below its NodePort range (30000-32767).
FIRST_PORT, END_PORT = 20000, 30000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on now, for a child to listen on later. Drawn below the kernel's
    ephemeral range: a port from that range (what binding port 0 gives) can be taken meanwhile as
    the source port of any outgoing connection on the machine, and was (a worker's metrics port,
    while a parallel test's load generator opened hundreds of connections)."""
    end = min(END_PORT, _ephemeral_low())
    if end > FIRST_PORT + 1000:
        for _ in range(200):
            port = _PICK.randrange(FIRST_PORT, end)
            with socket.socket() as s:
                try:
                    s.bind(("", port))  # every address: a worker's exporter listens on 0.0.0.0
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the ephemeral range (or none free): any free port
        s.bind(("127.0.0.1", 0))
        picked: int = s.getsockname()[1]
        return picked


class ProcessError(RuntimeError):
    """A child process failed to start or exited badly; the message points to its log."""


class ManagedProcess:
    """A child whose stdout lines go to ``on_line`` (and a log file) and whose stderr goes to the log."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", buffering=1)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._on_line = on_line
        self.proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: stop() reaches grandchildren too
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
            if self._on_line is not None:
                self._on_line(line.rstrip("\n"))
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first stdout line matching ``pattern``; raises if the process exits or time runs out."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise ProcessError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; idempotent."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()
