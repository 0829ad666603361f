"""Shared helpers of the load generator's integration tests (this module holds no tests).

Everything is real: the simulator as a subprocess, ``python -m fmbench_k8s.loadgen master`` and
two ``worker`` processes talking ZeroMQ on loopback, records written to a directory (or S3 on
moto). Nothing here sleeps a fixed time: it waits for lines, files or exit codes, with deadlines.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fmbench_k8s.contract.records import SCHEMA
from fmbench_k8s.local.processes import free_port
from fmbench_k8s.storage import Storage, open_storage

PY = sys.executable


@dataclass
class Sim:
    url: str
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_simulator(*args: str, cwd: Path | None = None) -> Sim:
    cmd = [PY, "-m", "fmbench_k8s.simulator", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=cwd or Path("/tmp"))  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("simulator listening on "):
                return Sim(line.split()[-1].strip(), proc)
        if proc.poll() is not None:
            break
    stop_process(proc)
    raise AssertionError(f"simulator did not start: {cmd}")


def write_spec(path: Path, *, variants: list[dict[str, Any]], load: dict[str, Any], slo: dict[str, Any] | None = None,
               workload: dict[str, Any] | None = None, name: str = "lgtest", **spec: Any) -> Path:  # fmt: skip
    doc = {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": name},
        "spec": {
            "variants": variants,
            "workload": workload
            or {"requestsPerMinute": 600, "promptTokens": {"mean": 100, "stddev": 10}, "outputTokens": {"mean": 16}},
            "slo": slo or {"latency": {"metric": "e2e", "percentile": 95, "maxSeconds": 10}, "maxErrorRate": 1.0},
            "load": {"workers": 2, "warmup": "300ms", "drain": "2s", "minRequestsPerStage": 1, **load},
            **spec,
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    err_path: Path | None = None
    reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def drain(self) -> None:
        """After the process exited: wait until every line it printed has been read (EOF)."""
        if self.reader is not None:
            self.reader.join(timeout=30)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text() if self.err_path and self.err_path.exists() else ""


@dataclass
class LoadgenRun:
    """A master and its workers, as the local runner starts them."""

    tmp: Path
    spec: Path
    variant: str
    output: str
    common: list[str]
    env: dict[str, str]
    master: Proc | None = None
    workers: list[Proc] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str]) -> Proc:
        err = self.tmp / f"{name}.err"
        proc = subprocess.Popen(
            [PY, "-m", "fmbench_k8s.loadgen", *args], stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
            cwd=self.tmp, env={**os.environ, **self.env}, start_new_session=True,
        )  # fmt: skip
        p = Proc(name, proc, err_path=err)
        p.start_reader()
        return p

    def start(self, workers: int = 2, master_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = ()) -> None:
        # A free port chosen up front (as the local runner does) lets the workers start alongside.
        port = free_port()
        self.master = self._spawn("master", ["master", *self.common, "--master-port", str(port), *master_args])
        for i in range(workers):
            args = ["worker", *self.common, "--master-host", "127.0.0.1", "--master-port", str(port),
                    "--metrics-port", "0", "--worker-id", f"w{i}", *worker_args]  # fmt: skip
            self.workers.append(self._spawn(f"w{i}", args))

    @property
    def events(self) -> list[dict[str, Any]]:
        assert self.master is not None
        out = []
        for line in list(self.master.lines):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            if self.master is not None and self.master.proc.poll() is not None and not check():
                raise AssertionError(f"master exited ({self.master.proc.returncode}) before {what}:\n"
                                     f"{self.master.stderr[-3000:]}")  # fmt: skip
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; master stderr:\n"
                             f"{self.master.stderr[-3000:] if self.master else ''}")  # fmt: skip

    def wait_event(self, kind: str, timeout: float, **match: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for e in self.events:
                if e.get("event") == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        event: dict[str, Any] = self.wait_for(find, timeout, f"event {kind} {match}")
        return event

    def wait(self, timeout: float = 120) -> int:
        assert self.master is not None
        try:
            code = self.master.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master still running after {timeout}s:\n{self.master.stderr[-3000:]}") from None
        for w in self.workers:
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker {w.name} did not exit after the master:\n{w.stderr[-2000:]}") from None
        for p in [self.master, *self.workers]:
            p.drain()
        return code

    def kill_all(self) -> None:
        for p in [*self.workers, *([self.master] if self.master else [])]:
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait()

    # -- outputs ---------------------------------------------------------------------------

    def storage(self) -> Storage:
        return open_storage(self.output, endpoint_url=self.env.get("AWS_ENDPOINT_URL_S3"))

    def records(self) -> pd.DataFrame:
        store = self.storage()
        keys = [k for k in store.list_keys(f"records/{self.variant}/") if k.endswith(".parquet")]
        tables = [pq.read_table(io.BytesIO(store.read_bytes(k)), schema=SCHEMA) for k in keys]
        frame: pd.DataFrame = pa.concat_tables([SCHEMA.empty_table(), *tables]).to_pandas()
        return frame

    def stages(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.storage().read_bytes(f"stages/{self.variant}.json"))
        return data

    def search(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.storage().read_bytes(f"stages/{self.variant}.search.json"))
        return data

    def stage_ends(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "stage_end"]


@contextlib.contextmanager
def loadgen(tmp: Path, spec: Path, variant: str, *, endpoint_url: str | None = None, api: str | None = None,
            output: str | None = None, env: dict[str, str] | None = None) -> Iterator[LoadgenRun]:  # fmt: skip
    out = output or str(tmp / "run")
    common = ["--spec", str(spec), "--variant", variant, "--output", out, "--run-id", "test"]
    if endpoint_url:
        common += ["--endpoint-url", endpoint_url]
    if api:
        common += ["--api", api]
    run = LoadgenRun(tmp, spec, variant, out, common, env or {})
    try:
        yield run
    finally:
        run.kill_all()


def assert_accounting(run: LoadgenRun, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every stage's result (as the master judged it) equals the sum of the workers' records."""
    df = run.records() if records is None else records
    assert not df.duplicated(["stage", "request_id"]).any(), "a request was written twice"
    assert set(df["outcome"]) <= {"ok", "error", "incomplete"}
    assert (df["ok"] == (df["outcome"] == "ok")).all()
    ends = run.stage_ends()
    assert ends, "no stage ended"
    stages = {s["stage"]: s for s in run.stages()}
    for e in ends:
        rows = df[df["stage"] == e["stage"]]
        info = stages[e["stage"]]
        win = rows[(rows["t_scheduled"] >= info["steady_start"]) & (rows["t_scheduled"] < info["steady_end"])]
        assert (rows["in_steady_window"] == rows["t_scheduled"].between(
            info["steady_start"], info["steady_end"], inclusive="left")).all()  # fmt: skip
        got = {"requests": len(rows), "ok": int(rows["ok"].sum()), "errors": int((rows["outcome"] == "error").sum()),
               "incomplete": int((rows["outcome"] == "incomplete").sum()), "window_requests": len(win),
               "window_ok": int(win["ok"].sum())}  # fmt: skip
        want = {k: e[k] for k in got}
        assert got == want, f"stage {e['stage']}: records {got} != master {want}"
    return df
