"""Fixtures of the chart tests: the real control plane (shared with tests/cluster) and a real
Prometheus on loopback (Debian's `prometheus`) for PromQL checks."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fmbench_k8s.local.processes import free_port

__all__ = ["Prometheus", "prometheus", "require_tool"]


def require_tool(name: str, package: str) -> str:
    """The path of ``name``, or fail saying what to install (tests never skip silently)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install {package} (scripts/setup.sh does)", pytrace=False)
    return path


class Prometheus:
    """A Prometheus server on loopback; :meth:`query_status` runs an instant query."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir

    def query_status(self, expr: str) -> tuple[int, str]:
        """HTTP status and body of ``/api/v1/query`` (400 means the expression does not parse)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        req = urllib.request.Request(f"{self.url}/api/v1/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = require_tool("prometheus", "Debian package prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}, "scrape_configs": []}))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}; log: {workdir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after 60s; log: {workdir / 'prometheus.log'}")
            time.sleep(0.2)
        yield Prometheus(url, workdir)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
