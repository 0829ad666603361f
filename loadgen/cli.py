"""Command line of the load generator master and workers (the contract the local runner and the
operator call; documented in docs/loadgen.md). Runs only under ``__main__`` (gevent patched)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import gevent

from fmbench_k8s.api.benchmark import Benchmark, SpecError, load_benchmark
from fmbench_k8s.api.spec import Variant
from fmbench_k8s.contract.verification import MasterOutcome, verification_spec
from fmbench_k8s.loadgen import messages as m
from fmbench_k8s.loadgen.clients import DEFAULT_TIMEOUT_S, make_client
from fmbench_k8s.loadgen.datasets import DatasetError
from fmbench_k8s.loadgen.exporter import Exporter
from fmbench_k8s.loadgen.master import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Master
from fmbench_k8s.loadgen.progress import ProgressSink
from fmbench_k8s.loadgen.prompts import load_corpus
from fmbench_k8s.loadgen.selfcheck import Monitor
from fmbench_k8s.loadgen.target import LOADGEN_APIS, Target, TargetError, resolve_target
from fmbench_k8s.loadgen.users import user_class_for
from fmbench_k8s.loadgen.worker import Worker
from fmbench_k8s.loadgen.writer import RecordWriter
from fmbench_k8s.storage import open_storage

log = logging.getLogger("fmbench.loadgen")


class UsageError(Exception):
    pass


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, type=Path, help="Benchmark YAML (the same file kubectl applies)")
    p.add_argument("--variant", required=True, help="variant name in the spec")
    p.add_argument("--output", required=True, help="run directory: a local path or s3://bucket/prefix")
    p.add_argument("--run-id", required=True, help="run identifier (for logs and metrics)")
    p.add_argument("--endpoint-url", help="model server base URL; required for engine variants "
                   "(OpenAI APIs include /v1); for sagemaker/bedrock an AWS endpoint override")  # fmt: skip
    p.add_argument("--api", choices=LOADGEN_APIS, help="wire API; default from the engine or the endpoint")
    p.add_argument("--verify", type=int, metavar="N", help="run the spec's verification of N instances of --variant "
                   "(docs/verify.md): its stages at R, as the variant <variant>-x<N>")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    p.add_argument("--log-level", default=os.environ.get("FMBENCH_LOG_LEVEL", "INFO"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmbench_k8s.loadgen",
                                     description="fmbench-k8s load generator (Locust master or worker)")  # fmt: skip
    sub = parser.add_subparsers(dest="role", required=True)
    mp = sub.add_parser("master", help="plan stages, coordinate workers, judge the SLO, write stages files")
    _common(mp)
    mp.add_argument("--bind-host", default="127.0.0.1", help="interface workers connect to (0.0.0.0 in a pod)")
    mp.add_argument("--master-port", type=int, default=5557, help="ZeroMQ port for workers (0 = a free one)")
    mp.add_argument("--expect-workers", type=int, help="start barrier (default spec.load.workers)")
    mp.add_argument("--worker-timeout", type=float, default=300.0, help="seconds to wait for the workers")
    mp.add_argument("--ready-timeout", type=float, default=60.0,
                    help="seconds the warm-up request may retry while the endpoint is not up")  # fmt: skip
    mp.add_argument("--web-port", type=int, help="serve Locust's web UI on this port")
    mp.add_argument("--metrics-port", type=int, help="Prometheus exporter port (stage and target gauges)")
    mp.add_argument("--progress-file", type=Path, help="append progress JSON lines here instead of stdout")
    mp.add_argument(
        "--outcome-file", type=Path, help="write the one-line outcome here at exit (in a pod: its termination message)"
    )
    wp = sub.add_parser("worker", help="send this worker's share of each stage's load; write records")
    _common(wp)
    wp.add_argument("--master-host", required=True)
    wp.add_argument("--master-port", type=int, required=True)
    wp.add_argument("--metrics-port", type=int, help="Prometheus exporter port (0 = a free one, printed)")
    wp.add_argument("--metrics-host", default="0.0.0.0")
    wp.add_argument(
        "--worker-id",
        default=os.environ.get("FMBENCH_WORKER_ID"),
        help="name in records and file names (default $FMBENCH_WORKER_ID, else HOSTNAME-PID)",
    )
    wp.add_argument("--max-inflight", type=int, default=4096, help="open loop: cap on requests in flight")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def _load(args: argparse.Namespace) -> tuple[Benchmark, Variant, Target]:
    try:
        bench = load_benchmark(args.spec)
    except SpecError as err:
        raise UsageError(str(err)) from None
    variant = next((v for v in bench.spec.variants if v.name == args.variant), None)
    if variant is None:
        names = ", ".join(v.name for v in bench.spec.variants)
        raise UsageError(f"--variant {args.variant!r} is not in {args.spec} (variants: {names})")
    if args.verify is not None:
        if bench.spec.verify is None or args.verify < 1:
            raise UsageError(f"--verify: needs a spec with verify: and N >= 1 (got {args.verify} for {args.spec})")
        bench = bench.model_copy(update={"spec": verification_spec(bench.spec, variant.name, args.verify)})
        variant = bench.spec.variants[0]
    try:
        target = resolve_target(bench.spec, variant, args.endpoint_url, args.api)
    except TargetError as err:
        raise UsageError(str(err)) from None
    return bench, variant, target


def _locust_env(target: Target) -> object:
    from locust.env import Environment

    return Environment(user_classes=[user_class_for(target.api, target.url)])


def run_master(args: argparse.Namespace) -> int:
    bench, variant, target = _load(args)
    storage = open_storage(args.output)
    progress = ProgressSink(variant.name, args.progress_file)
    env = _locust_env(target)
    runner = env.create_master_runner(args.bind_host, args.master_port)  # type: ignore[attr-defined]
    port = int(runner.server.port)
    print(f"loadgen master listening on {args.bind_host}:{port}", file=sys.stderr, flush=True)
    progress.emit("listening", master_host=args.bind_host, master_port=port, run_id=args.run_id,
                  target=None, api=target.api, endpoint=target.describe())  # fmt: skip
    if args.web_port is not None:
        env.create_web_ui(args.bind_host, args.web_port)  # type: ignore[attr-defined]
    exporter = None
    if args.metrics_port is not None:
        exporter = Exporter(bench.metadata.name, variant.name)
        exporter.start(args.metrics_port, args.bind_host)
    warmup = make_client(target, pool_size=2, timeout=min(args.request_timeout, 120.0))
    master = Master(
        runner=runner, spec=bench.spec, variant=variant.name, storage=storage, progress=progress,
        warmup_client=warmup, expect_workers=args.expect_workers or bench.spec.load.workers,
        worker_timeout=args.worker_timeout, ready_timeout=args.ready_timeout, exporter=exporter,
    )  # fmt: skip
    runner.register_message(m.HELLO, master.on_hello)
    runner.register_message(m.PROGRESS, master.on_progress)
    runner.register_message(m.RESULT, master.on_result)
    interrupts = []

    def on_signal() -> None:
        interrupts.append(1)
        if len(interrupts) > 1:
            print("second interrupt: exiting now", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        log.warning("interrupted: stopping the load, workers mark in-flight requests incomplete")
        master.interrupt()

    gevent.signal_handler(signal.SIGINT, on_signal)
    gevent.signal_handler(signal.SIGTERM, on_signal)
    code = master.run()
    # Completed: the stages' verdicts ride along (the operator's verify phase reads them).
    outcome = (
        MasterOutcome(levels=master.judged).line() if code == 0 else "interrupted" if code == EXIT_INTERRUPTED else None
    )
    if outcome is None:
        outcome = master.notes[-1] if master.notes else f"failed (exit code {code})"
        print(f"loadgen master: {outcome}", file=sys.stderr, flush=True)
    if args.outcome_file is not None:
        args.outcome_file.write_text(outcome + "\n")
    runner.quit()
    if exporter is not None:
        exporter.stop()
    progress.close()
    return code


def _worker_id(given: str | None) -> str:
    raw = given or f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:100]


def _pool_size(bench: Benchmark, max_inflight: int) -> int:
    load = bench.spec.load
    if load.arrival != "closed":
        return max_inflight
    levels = load.concurrency
    top = max(levels.levels) if levels.levels else (levels.max or 1)
    return math.ceil(top / load.workers) + 16


def run_worker(args: argparse.Namespace) -> int:
    bench, variant, target = _load(args)
    try:
        corpus = load_corpus(bench.spec.workload)
    except DatasetError as err:
        raise UsageError(str(err)) from None
    worker_id = _worker_id(args.worker_id)
    storage = open_storage(args.output)
    client = make_client(target, pool_size=_pool_size(bench, args.max_inflight), timeout=args.request_timeout)
    exporter = Exporter(bench.metadata.name, variant.name)
    env = _locust_env(target)
    try:
        runner = env.create_worker_runner(args.master_host, args.master_port)  # type: ignore[attr-defined]
    except ConnectionError as err:
        print(f"loadgen worker: cannot reach the master at {args.master_host}:{args.master_port}: {err}",
              file=sys.stderr, flush=True)  # fmt: skip
        return EXIT_FAILED
    metrics_port = None
    if args.metrics_port is not None:
        metrics_port = exporter.start(args.metrics_port, args.metrics_host)
        print(f"metrics listening on http://{args.metrics_host}:{metrics_port}", flush=True)
    monitor = Monitor()
    monitor.start()
    worker = Worker(
        runner=runner, client=client, writer=RecordWriter(storage, variant.name, worker_id), exporter=exporter,
        monitor=monitor, workload=bench.spec.workload, corpus=corpus, variant=variant.name, worker_id=worker_id,
        max_inflight=args.max_inflight,
        answer_chars=bench.spec.evaluation.max_answer_chars if bench.spec.evaluation is not None else None,
    )  # fmt: skip
    runner.register_message(m.STAGE, worker.on_stage)
    runner.register_message(m.EXTEND, worker.on_extend)
    runner.register_message(m.ABORT, worker.on_abort)
    runner.send_message(m.HELLO, {"worker": worker_id, "metrics_port": metrics_port, "pid": os.getpid()})
    log.info("worker %s connected to %s:%s; sending %s", worker_id, args.master_host, args.master_port,
             target.describe())  # fmt: skip
    stopped_by_signal = []

    def on_signal() -> None:
        stopped_by_signal.append(1)
        log.warning("signal: stopping; in-flight requests are written as incomplete")
        gevent.spawn(_stop_worker, worker, runner)

    gevent.signal_handler(signal.SIGINT, on_signal)
    gevent.signal_handler(signal.SIGTERM, on_signal)
    runner.greenlet.join()
    worker.shutdown("worker_stopped")
    monitor.stop()
    client.close()
    exporter.stop()
    return EXIT_INTERRUPTED if stopped_by_signal else 0


def _stop_worker(worker: Worker, runner: object) -> None:
    worker.shutdown("worker_stopped")
    runner.quit()  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    _raise_fd_limit()
    try:
        return run_master(args) if args.role == "master" else run_worker(args)
    except UsageError as err:
        print(f"loadgen {args.role}: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as err:
        log.exception("loadgen %s failed", args.role)
        print(f"loadgen {args.role}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return EXIT_FAILED
