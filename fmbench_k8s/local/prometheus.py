"""A throw-away Prometheus on loopback scraping the run's simulators and load workers."""

from __future__ import annotations

import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fmbench_k8s.local.processes import ManagedProcess, ProcessError, free_port


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: its targets' URLs (same scheme and path) and the labels every series gets,
    as the operator's PodMonitors attach ``benchmark`` and ``variant`` on a cluster."""

    name: str
    urls: list[str]
    labels: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        first = urlsplit(self.urls[0])
        return {
            "job_name": self.name,
            "scheme": first.scheme or "http",
            "metrics_path": first.path or "/metrics",
            "static_configs": [{"targets": [urlsplit(u).netloc for u in self.urls], "labels": self.labels}],
        }


def write_config(path: Path, jobs: list[ScrapeJob], interval_s: float = 1.0) -> None:
    config = {
        "global": {"scrape_interval": f"{int(interval_s * 1000)}ms", "evaluation_interval": "5s"},
        "scrape_configs": [job.config() for job in jobs if job.urls],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_prometheus(
    binary: str, workdir: Path, jobs: list[ScrapeJob], data_dir: Path | None = None
) -> tuple[ManagedProcess, str]:
    """Start it and wait until ready; returns the process and its base URL. ``data_dir`` (default
    ``workdir/data``) may be an earlier run's TSDB, to query that run afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    write_config(config, jobs)
    port = free_port()
    proc = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir or workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        workdir / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise ProcessError(f"prometheus exited with code {proc.proc.returncode}; see {proc.log_path}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.stop()
    raise ProcessError(f"prometheus not ready after 30s; see {proc.log_path}")
