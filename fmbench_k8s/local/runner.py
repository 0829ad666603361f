"""Run a Benchmark on one machine: the same YAML `kubectl apply` takes.

Per run: start a simulator per ``engine: simulator`` variant, Prometheus when installed, then per
variant a Locust master and ``load.workers`` workers (``python -m fmbench_k8s.loadgen``, separate
processes because Locust's gevent patching must own its process), and finally the analysis.
Variants run one after another so they do not compete for this machine's cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from fmbench_k8s.api.benchmark import Benchmark, load_benchmark, to_manifest
from fmbench_k8s.api.spec import Variant, metrics_url_of
from fmbench_k8s.contract import exits, layout
from fmbench_k8s.contract.engines import engine_info, local_argv, variant_api
from fmbench_k8s.contract.summary import Summary
from fmbench_k8s.local.plan import VariantPlan, plan_run
from fmbench_k8s.local.processes import ManagedProcess, ProcessError, free_port
from fmbench_k8s.local.progress import Progress, print_result
from fmbench_k8s.local.prometheus import ScrapeJob, find_prometheus, start_prometheus
from fmbench_k8s.storage import Storage, open_storage, patience_from_env, patient

if TYPE_CHECKING:
    from fmbench_k8s.analysis.pricing import PriceTable

READY_TIMEOUT_S = 60.0


@dataclass
class RunContext:
    bench: Benchmark
    run: Storage
    run_id: str
    workdir: Path
    console: Console
    processes: list[ManagedProcess] = field(default_factory=list)
    interrupted: threading.Event = field(default_factory=threading.Event)
    notes: list[str] = field(default_factory=list)
    simulators: dict[str, ManagedProcess] = field(default_factory=dict)  # by variant
    price_table: PriceTable | None = None  # None: the shipped one
    engines: dict[str, str] = field(default_factory=dict)  # engine → its Python (--engine-python)

    def start(self, name: str, argv: list[str], **kw: Any) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", **kw)
        self.processes.append(proc)
        return proc

    def revive_simulator(self, variant: str) -> None:
        """Restart ``variant``'s simulator if it died, on the same port, as the kubelet restarts a
        crashed model server: the load generator then waits for it (load.endpointRetries)."""
        dead = self.simulators.get(variant)
        if dead is None or dead.proc.poll() is None or self.interrupted.is_set():
            return
        self.notes.append(f"variant {variant}: the simulator exited (code {dead.proc.returncode}) and was restarted")
        self.processes.remove(dead)
        proc = self.start(dead.name, [str(a) for a in dead.proc.args])  # type: ignore[union-attr]
        self.simulators[variant] = proc
        proc.wait_for_line(r"listening on (http://\S+)", READY_TIMEOUT_S)


NOT_VERIFIED = (
    "not verified: spec.verify runs on a cluster, where the operator deploys the recommended N replicas behind "
    "one Service (docs/verify.md)"
)


def print_plan(console: Console, bench: Benchmark, plans: list[VariantPlan]) -> None:
    load = bench.spec.load
    workers = f"{load.workers} worker{'s' if load.workers != 1 else ''}"
    console.print(
        f"[bold]{bench.metadata.name}[/]: {len(plans)} variants, mode {load.mode}, {workers}, "
        f"stages of {load.warmup} warm-up + {load.stage_duration} steady + up to {load.drain} drain"
    )
    for p in plans:
        console.print(
            f"  {p.name:<16} {p.api:<12} {p.target}\n      {p.levels}: ≤ {p.max_stages} stages, "
            f"≤ {p.max_seconds / 60:.1f} min"
        )
    total = sum(p.max_seconds for p in plans)
    early = " (search usually stops earlier)" if load.mode == "search" else ""
    console.print(f"  at most {total / 60:.1f} min of load in all{early}")


def _python() -> str:
    return sys.executable


def _start_simulator(ctx: RunContext, variant: Variant) -> str:
    model = ctx.bench.spec.model_for(variant)
    port = str(free_port())  # fixed, so that a restarted simulator is the same endpoint
    argv = [_python(), "-m", "fmbench_k8s.simulator", "--port", port, "--profile", str(variant.instance_type)]
    if model is not None:
        argv += ["--model", model.name]
    argv += variant.args  # as the operator gives the simulator's pod (e.g. --prefix-cache-blocks)
    proc = ctx.simulators[variant.name] = ctx.start(f"simulator-{variant.name}", argv)
    match = proc.wait_for_line(r"listening on (http://\S+)", READY_TIMEOUT_S)
    return match.group(1) + engine_info("simulator").base_path


def _start_engine(ctx: RunContext, variant: Variant) -> str:
    """A real engine as a process of this run, with the command line the operator gives its pod
    (contract/engines.py) plus the variant's own args and env; returns its endpoint URL once it
    answers /health (within timeouts.modelReady)."""
    assert variant.engine is not None
    info = engine_info(variant.engine)
    model = ctx.bench.spec.model_for(variant)
    assert info.local_module is not None and model is not None  # plan_run and the spec make sure
    port = free_port()
    python = ctx.engines[variant.engine]
    tp = variant.accelerators or 1
    argv = [*local_argv(variant.engine, python, model.name, port, tensor_parallel=tp, revision=model.revision)]
    argv += variant.args
    # cwd: the run's folder, not wherever the user is: `python -m` puts the cwd first on sys.path,
    # and a folder there named like a standard module (this checkout's operator/) would shadow it.
    env = {e.name: e.value for e in variant.env}
    proc = ctx.start(f"engine-{variant.name}", argv, env=env, cwd=ctx.workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ctx.bench.spec.timeouts.model_ready_s
    ctx.console.print(f"{variant.engine} for {variant.name} starting on {url} (log: {proc.log_path})")
    while True:
        if proc.proc.poll() is not None:
            raise ProcessError(f"{proc.name} exited with code {proc.proc.returncode}; see {proc.log_path}")
        if ctx.interrupted.is_set():
            raise ProcessError(f"interrupted while {proc.name} was starting; nothing was measured")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}{info.health_path}", timeout=2) as resp:
            if resp.status == 200:
                return url + info.base_path
        if time.monotonic() > deadline:
            raise ProcessError(f"{proc.name} not ready within timeouts.modelReady; see {proc.log_path}")
        time.sleep(0.5)


def _run_variant(
    ctx: RunContext,
    variant: Variant,
    *,
    spec_path: Path,
    endpoint_url: str | None,
    metrics_ports: list[int],
    progress: Progress,
) -> int:
    """One variant's load: a master and its workers; returns the master's exit code."""
    load = ctx.bench.spec.load
    target = layout.LoadgenTarget(
        spec=str(spec_path), variant=variant.name, output=ctx.run.uri(), run_id=ctx.run_id,
        endpoint_url=endpoint_url, api=variant_api(variant) if endpoint_url is not None else None,
    )  # fmt: skip
    loadgen = [_python(), "-m", "fmbench_k8s.loadgen"]
    master_port = free_port()
    master_args = layout.loadgen_master_args(
        target, bind_host="127.0.0.1", master_port=master_port, expect_workers=load.workers
    )
    master = ctx.start(f"loadgen-master-{variant.name}", [*loadgen, *master_args], on_line=progress.feed)
    workers = []
    for i in range(load.workers):
        worker_args = layout.loadgen_worker_args(
            target, master_host="127.0.0.1", master_port=master_port, metrics_port=metrics_ports[i], worker_id=f"w{i}"
        )
        workers.append(ctx.start(f"loadgen-worker-{variant.name}-{i}", [*loadgen, *worker_args]))
    forwarded = False
    while master.proc.poll() is None:
        if ctx.interrupted.is_set() and not forwarded:
            master.signal(signal.SIGINT)  # the master stops load; workers flush and mark in-flight requests
            forwarded = True
        ctx.revive_simulator(variant.name)
        time.sleep(0.1)
    code = master.wait()
    # They exit once the master tells them to, after their last records are stored (which may wait
    # out a storage outage); stop any that did not.
    drain_s = 15 + (patience_from_env() if ctx.run.uri().startswith("s3://") else 0)
    for w in workers:
        try:
            w.proc.wait(drain_s)
        except subprocess.TimeoutExpired:
            w.stop(grace=5)
    return code


@contextlib.contextmanager
def _sigint_sets(event: threading.Event) -> Iterator[None]:
    """First Ctrl-C: stop load and still write a partial report. Second: abort."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if event.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt  # the CLI ends at once, without a traceback, after the processes stop
        event.set()
        # Said at once (a write is safe in a signal handler): the stage's drain and the analysis follow.
        os.write(2, b"\ninterrupted: ending the current stage and writing a partial report; Ctrl-C again to abort\n")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_local(
    spec_file: Path,
    output: str,
    *,
    dry_run: bool = False,
    console: Console | None = None,
    use_prometheus: bool = True,
    plots: bool = True,
    price_table: PriceTable | None = None,
    engines: dict[str, str] | None = None,
    result_format: str = "table",
) -> int:
    """The ``fmbench-k8s run`` command. Returns the process exit code. ``engines``: engine → the
    Python that serves it here (``--engine-python``). ``result_format`` json or yaml: the result
    alone goes to stdout (for scripts), everything else to stderr."""
    console = console or _console_for(result_format)
    bench = load_benchmark(spec_file)
    plans = plan_run(bench, engines)
    root = patient(open_storage(output))  # S3 down for a while: records, stages and report wait for it
    print_plan(console, bench, plans)
    from fmbench_k8s.analysis.pricing import check_prices

    for line in check_prices(list(bench.spec.variants), bench.spec.analysis.pricing, price_table):
        console.print(f"[yellow]warning: {line}[/]")
    if dry_run:
        return exits.OK

    ctx, spec_path = _open_run(bench, root, console, price_table, engines)
    if bench.spec.verify is not None:
        ctx.notes.append(NOT_VERIFIED)
        console.print(f"[yellow]note: {NOT_VERIFIED}[/]")
    prometheus_url: str | None = None
    try:
        with _sigint_sets(ctx.interrupted):
            endpoints = {v.name: _start_server(ctx, v) for v in bench.spec.variants}
            metrics_ports = [free_port() for _ in range(bench.spec.load.workers)]
            prometheus_url = _maybe_prometheus(ctx, endpoints, metrics_ports, use_prometheus)
            progress = Progress(console, [p.name for p in plans])
            with progress.live():
                code = _run_variants(ctx, spec_path, endpoints, metrics_ports, progress)
            if prometheus_url is not None:
                time.sleep(1.5)  # one more 1 s scrape, so the final counters are in Prometheus
        partial = ctx.interrupted.is_set() or code != 0
        # Load and simulators stop now; Prometheus stays up until the analysis has queried it.
        for proc in reversed(ctx.processes):
            if proc.name != "prometheus":
                proc.stop()
        summary = _analyze(ctx, prometheus_url, partial, plots)
    finally:
        for proc in reversed(ctx.processes):
            proc.stop()
    print_result(console, summary, result_format)
    if ctx.interrupted.is_set():
        console.print("[yellow]interrupted: the report is partial; every record collected is kept[/]")
        return exits.INTERRUPTED
    return code


def _console_for(result_format: str) -> Console:
    machine = result_format != "table"
    # Logs and CI are not terminals; give tables room rather than rich's 80 columns.
    tty = (sys.stderr if machine else sys.stdout).isatty()
    return Console(stderr=machine) if tty else Console(stderr=machine, width=120)


def _open_run(
    bench: Benchmark,
    root: Storage,
    console: Console,
    price_table: PriceTable | None,
    engines: dict[str, str] | None,
) -> tuple[RunContext, Path]:
    """The run's folder with its copy of the spec, and the path the load generators read it from."""
    run_id = layout.run_id(datetime.now(UTC))
    run = root.child(layout.run_path(layout.LOCAL_NAMESPACE, bench.metadata.name, run_id))
    local_root = Path(run.uri()) if not run.uri().startswith("s3://") else None
    workdir = local_root if local_root is not None else Path(tempfile.mkdtemp(prefix=f"fmbench-{run_id}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(bench, run, run_id, workdir, console, price_table=price_table, engines=dict(engines or {}))
    manifest = yaml.safe_dump(to_manifest(bench), sort_keys=False)
    run.write_bytes("spec.yaml", manifest.encode())
    spec_path = workdir / "spec.yaml"  # the run's own copy when local
    if local_root is None:
        spec_path.write_text(manifest)
    console.print(f"run {run_id} → {run.uri()}")
    return ctx, spec_path


def _start_server(ctx: RunContext, variant: Variant) -> str | None:
    """The URL of the model server this run starts for the variant; None for an endpoint."""
    if variant.engine == "simulator":
        return _start_simulator(ctx, variant)
    if variant.engine is not None:
        return _start_engine(ctx, variant)
    return None


def _run_variants(
    ctx: RunContext,
    spec_path: Path,
    endpoints: dict[str, str | None],
    metrics_ports: list[int],
    progress: Progress,
) -> int:
    code = exits.OK
    for v in ctx.bench.spec.variants:
        if ctx.interrupted.is_set():
            ctx.notes.append(f"variant {v.name} not run: interrupted")
            continue
        rc = _run_variant(
            ctx, v, spec_path=spec_path, endpoint_url=endpoints[v.name], metrics_ports=metrics_ports, progress=progress
        )
        if rc not in (0, 130):
            why = progress.failure(v.name) or f"load generator exited with code {rc}"
            ctx.notes.append(f"variant {v.name} failed: {why}")
            code = exits.FAILED
            ctx.console.print(f"[red]variant {v.name} failed: {why}; logs in {ctx.workdir / 'logs'}[/]")
    return code


def _maybe_prometheus(
    ctx: RunContext, endpoints: dict[str, str | None], metrics_ports: list[int], wanted: bool
) -> str | None:
    if not wanted:
        ctx.notes.append("server metrics not collected: Prometheus disabled for this run")
        return None
    binary = find_prometheus()
    if binary is None:
        ctx.notes.append("server metrics not collected: prometheus is not installed (make setup installs it)")
        ctx.console.print("[yellow]prometheus not found: running without server metrics[/]")
        return None
    name = ctx.bench.metadata.name
    jobs = [ScrapeJob("fmbench-loadgen", [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports])]
    for v in ctx.bench.spec.variants:
        target = _metrics_target(v, endpoints.get(v.name))
        if target is not None:  # the model server's series get the labels the analysis selects by
            jobs.append(ScrapeJob(f"server-{v.name}", [target], {"benchmark": name, "variant": v.name}))
    proc, url = start_prometheus(binary, ctx.workdir / "prometheus", jobs)
    ctx.processes.append(proc)
    ctx.console.print(f"prometheus {url} scraping {len(jobs) - 1} model servers and {len(metrics_ports)} workers")
    return url


def _metrics_target(variant: Variant, started_url: str | None) -> str | None:
    """The model server's /metrics: the one this run started, or the endpoint's own."""
    if variant.endpoint is not None:
        return variant.endpoint.metrics_target
    return None if started_url is None else metrics_url_of(started_url)


def _analyze(ctx: RunContext, prometheus_url: str | None, partial: bool, plots: bool) -> Summary:
    from fmbench_k8s.analysis.run import analyze_run

    summary = analyze_run(
        ctx.bench.spec,
        ctx.run,
        benchmark=ctx.bench.metadata.name,
        run_id=ctx.run_id,
        prometheus_url=prometheus_url,
        partial=partial,
        plots=plots,
        notes=ctx.notes,
        price_table=ctx.price_table,
        served={
            v.name: f"{v.engine} from {ctx.engines[v.engine]} on this machine"
            for v in ctx.bench.spec.variants
            if v.engine is not None and v.engine in ctx.engines
        },
    )
    ctx.run.write_bytes("summary.json", json.dumps(summary.doc(), indent=2).encode())
    return summary
