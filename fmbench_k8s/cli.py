"""The ``fmbench-k8s`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmbench_k8s import __version__
from fmbench_k8s.api.benchmark import (
    SpecError,
    benchmark_documents,
    load_documents,
    mentions_benchmark,
    parse_benchmark,
)
from fmbench_k8s.contract import exits
from fmbench_k8s.contract.engines import cluster_problems

if TYPE_CHECKING:
    from fmbench_k8s.analysis.pricing import PriceTable
    from fmbench_k8s.api.benchmark import Benchmark
    from fmbench_k8s.storage import Storage

PRICE_TABLE_HELP = "your own price table (the shipped table's format, docs/cost-model.md), e.g. negotiated rates"


YAML_SUFFIXES = (".yaml", ".yml")


def _spec_files(given: Sequence[Path]) -> list[tuple[Path, bool]]:
    """Files, directories (their *.yaml/*.yml, recursively, in name order) and ``-`` (stdin), as
    ``kubectl apply -f`` takes them; each with whether it was found in a directory (where other
    manifests may sit beside Benchmarks). A directory without YAML is kept, to be reported."""
    out: list[tuple[Path, bool]] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
            out += [(p, True) for p in found] or [(path, False)]
        else:
            out.append((path, False))
    return out


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    files = _spec_files([*args.files, *args.filename])
    if not files:
        print("validate: give files, directories or - (stdin), e.g. validate -f crds/samples/", file=sys.stderr)
        return exits.USAGE
    try:
        table = _price_table(args.price_table)
    except ValueError:
        return exits.INVALID
    for path, in_directory in files:
        try:
            if in_directory and not any(mentions_benchmark(d) for d in load_documents(path)):
                if not args.quiet:  # another manifest of the directory: not ours to judge
                    print(f"{path}: skipped (no fmbench.io document)")
                continue
            docs = benchmark_documents(path)
            for doc in docs:
                bench = parse_benchmark(doc, str(path))
                problems = [] if args.local else cluster_problems(bench)
                if problems:
                    raise SpecError(str(path), problems)
                for line in _price_warnings(bench, table):
                    print(f"{path}: warning: {line}", file=sys.stderr)
        except SpecError as err:
            failed += 1
            for problem in err.problems:
                print(f"{err.source}: {problem}", file=sys.stderr)
            continue
        if not args.quiet:
            several = "s; `run` takes one per file" if len(docs) > 1 else ""
            print(f"{path}: valid ({len(docs)} Benchmark{several})")
    return exits.INVALID if failed else exits.OK


def _price_warnings(bench: Benchmark, table: PriceTable | None) -> list[str]:
    """Variants the run could not price (no cost answer for them), said before anything runs."""
    from fmbench_k8s.analysis.pricing import check_prices

    return check_prices(list(bench.spec.variants), bench.spec.analysis.pricing, table)


def _crd(args: argparse.Namespace) -> int:
    from fmbench_k8s.api.crd import render_crd

    text = render_crd()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _run(args: argparse.Namespace) -> int:
    from fmbench_k8s.local.plan import PlanError
    from fmbench_k8s.local.processes import ProcessError
    from fmbench_k8s.local.progress import RESULT_FORMATS
    from fmbench_k8s.local.runner import run_local
    from fmbench_k8s.storage import open_storage

    result_format = args.output if args.output in RESULT_FORMATS else "table"
    if args.output not in RESULT_FORMATS and args.output_dir is not None:
        print(f"run: -o {args.output}: give table, json or yaml (the directory is --output-dir)", file=sys.stderr)
        return exits.USAGE
    output = args.output_dir or (args.output if args.output not in RESULT_FORMATS else "results")
    try:
        open_storage(output)
    except ValueError as err:  # neither a path nor s3://
        print(f"--output-dir: {err}", file=sys.stderr)
        return exits.USAGE
    try:
        table = _price_table(args.price_table)  # checked before any process starts
    except ValueError:
        return exits.INVALID
    try:
        engines = _pairs(args.engine_python, "--engine-python")
    except ValueError as err:
        print(err, file=sys.stderr)
        return exits.USAGE
    if (args.file is None) == (args.filename is None):
        print("run: give the Benchmark file once: run FILE, or run -f FILE (- reads stdin)", file=sys.stderr)
        return exits.USAGE
    spec = args.file or args.filename
    if spec.is_dir():
        print(f"run: {spec} is a directory; a run takes one Benchmark file (validate -f takes directories)",
              file=sys.stderr)  # fmt: skip
        return exits.USAGE
    try:
        return run_local(
            spec, output, dry_run=args.dry_run, use_prometheus=not args.no_prometheus,
            plots=not args.no_plots, price_table=table, engines=dict(engines), result_format=result_format,
        )  # fmt: skip
    except (SpecError, PlanError) as err:
        for problem in err.problems:
            print(f"{spec}: {problem}", file=sys.stderr)
        return exits.INVALID
    except ProcessError as err:  # a model server this run started did not come up
        print(f"run: {err}", file=sys.stderr)
        return exits.FAILED
    except Exception as err:
        return _storage_failure("run", err)


def _storage_failure(command: str, err: Exception) -> int:
    """An S3 error a user fixes (credentials, bucket, access) as one line and exit 3; anything
    else is a bug of ours and keeps its traceback."""
    from fmbench_k8s.storage import storage_problem

    line = storage_problem(err)
    if line is None:
        raise err
    print(f"{command}: {line}", file=sys.stderr)
    return exits.FAILED


def _pairs(given: list[str], flag: str) -> list[tuple[str, str]]:
    """NAME=VALUE items; ValueError naming the flag for one without a name or a value."""
    pairs = [(key, value) for key, _, value in (item.partition("=") for item in given)]
    bad = [item for item, (key, value) in zip(given, pairs, strict=True) if not key or not value]
    if bad:
        raise ValueError(f"{flag}: {bad[0]!r} is not NAME=VALUE")
    return pairs


def _price_table(path: Path | None) -> PriceTable | None:
    """``--price-table``: the user's table, or None for the shipped one. A bad table is reported
    here, one ``--price-table: FILE: field: problem`` line each, and re-raised for exit 2."""
    from fmbench_k8s.analysis.pricing import load_price_table

    try:
        return load_price_table(path) if path is not None else None
    except ValueError as err:
        print(f"--price-table: {err}", file=sys.stderr)
        raise


def _ran_on(given: list[str], flag: str = "--ran-on") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, types in _pairs(given, flag):
        out.setdefault(name, []).extend(t for t in types.split(",") if t)
    return out


def _analyze(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fmbench_k8s.analysis.metrics import AccountingError
    from fmbench_k8s.analysis.run import analyze_run
    from fmbench_k8s.api.benchmark import benchmark_from_bytes, load_benchmark
    from fmbench_k8s.local.progress import print_result
    from fmbench_k8s.storage import open_storage, patient

    try:
        table = _price_table(args.price_table)
    except ValueError:
        return exits.INVALID
    where = args.run or args.records
    if where is None or (args.run is not None and args.records is not None):
        print("analyze: give the run directory once: analyze RUN (or --records RUN)", file=sys.stderr)
        return exits.USAGE
    try:
        # An analysis Job started while S3 is unreachable waits for it (FMBENCH_STORAGE_PATIENCE_SECONDS).
        records = patient(open_storage(where))
        if args.spec is not None:
            bench = load_benchmark(args.spec)
        else:  # every run directory holds the spec it ran
            bench = benchmark_from_bytes(_run_spec(records), records.uri("spec.yaml"))
        output = patient(open_storage(args.output_dir)) if args.output_dir else records
        run_id = args.run_id or records.uri().rstrip("/").rsplit("/", 1)[-1]
        summary = analyze_run(
            bench.spec,
            records,
            benchmark=bench.metadata.name,
            run_id=run_id,
            prometheus_url=args.prometheus_url,
            partial=args.partial,
            plots=not args.no_plots,
            output=output,
            price_table=table,
            ran_on=_ran_on(args.ran_on),
            bought=_ran_on(args.capacity_type, "--capacity-type"),
        )
    except SpecError as err:
        for problem in err.problems:
            print(f"{err.source}: {problem}", file=sys.stderr)
        return exits.INVALID
    except (AccountingError, ValueError) as err:
        print(f"analyze: {err}", file=sys.stderr)
        return exits.INVALID
    except OSError as err:  # storage that cannot be read or written
        print(f"analyze: {err}", file=sys.stderr)
        return exits.FAILED
    except Exception as err:
        return _storage_failure("analyze", err)
    if args.summary_file:
        # The operator reads this as the pod's termination message (at most 4 KiB).
        args.summary_file.write_text(summary.termination_message())
    print_result(Console(stderr=args.output != "table"), summary, args.output)
    return exits.OK


def _run_spec(records: Storage) -> bytes:
    """A run directory's spec.yaml; a SpecError that says what RUN should be when it has none."""
    if "spec.yaml" not in records.list_keys("spec.yaml"):
        raise SpecError(
            records.uri(), ["spec.yaml: not found; give a run directory (it holds spec.yaml) or --spec FILE"]
        )
    return records.read_bytes("spec.yaml")


def _compare(args: argparse.Namespace) -> int:
    from fmbench_k8s.analysis.compare import compare
    from fmbench_k8s.analysis.run import load_report
    from fmbench_k8s.contract.report import parse_report
    from fmbench_k8s.storage import open_storage

    reports = []
    for given in (args.run_a, args.run_b):
        where, key = given.rpartition("/")[::2] if given.endswith(".json") else (given, "report.json")
        try:
            reports.append(parse_report(load_report(open_storage(where or "."), key)))
        except (OSError, ValueError) as err:
            print(f"compare: cannot read {where}/{key}: {err}", file=sys.stderr)
            return exits.INVALID
    result = compare(reports[0], reports[1], threshold=args.threshold, allow_different=args.allow_different)
    print(result.markdown(), end="")
    if args.junit is not None:
        args.junit.write_text(result.junit())
    if result.refusals:
        return exits.INVALID
    return exits.REGRESSION if result.regressions else exits.OK


def _day_profile(args: argparse.Namespace) -> int:
    """Prints the YAML to paste under spec.analysis (docs/cost-model.md, "A day of traffic")."""
    from fmbench_k8s.api.spec import Trace
    from fmbench_k8s.contract.traces import TraceError, hourly_profile, parse_trace
    from fmbench_k8s.storage import open_storage

    folder, _, key = args.trace.rpartition("/")
    try:
        data = open_storage(folder or ".").read_bytes(key)
        replay = parse_trace(data, Trace(uri=args.trace, format=args.format))
        rates = hourly_profile(replay)
    except OSError as err:
        print(f"day-profile: cannot read {args.trace}: {err}", file=sys.stderr)
        return exits.INVALID
    except TraceError as err:
        print(f"day-profile: {args.trace}: {err}", file=sys.stderr)
        return exits.INVALID
    values = ", ".join(f"{r:.4g}" for r in rates)
    print(f"# {args.trace}: {len(replay.offsets):,} requests; mean {sum(rates) / 24:.4g} req/min, "
          f"peak {max(rates):.4g} at hour {rates.index(max(rates))} (UTC)")  # fmt: skip
    print(f"day:\n  hourlyRequestsPerMinute: [{values}]")
    return exits.OK


def _simulate(args: argparse.Namespace) -> int:
    from fmbench_k8s.simulator.cli import main as simulator_main

    return simulator_main(args.simulator_args)


def _loadgen(args: argparse.Namespace) -> int:
    # A separate interpreter: Locust's gevent monkey-patching must come before anything else loads.
    import os

    os.execv(sys.executable, [sys.executable, "-m", "fmbench_k8s.loadgen", *args.loadgen_args])
    return 1  # not reached


def _operator(args: argparse.Namespace) -> int:
    from fmbench_k8s.operator.run import main as operator_main

    return operator_main(args.operator_args)


class _Defaults(argparse.HelpFormatter):
    """Help that names each flag's default, where it has one worth naming."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], "", argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does and every flag's default."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", formatter_class=_Defaults
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmbench-k8s",
        description="Find the cheapest instance type and count that serve an LLM workload under a latency SLO.",
    )
    parser.add_argument("--version", action="version", version=f"fmbench-k8s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_validate,
        _add_crd,
        _add_run,
        _add_analyze,
        _add_compare,
        _add_day_profile,
        _add_simulate,
        _add_loadgen,
        _add_operator,
    ):
        add(sub)
    return parser


def _add_validate(sub: Any) -> None:
    p = _command(sub, "validate", "check Benchmark YAML files offline (the rules of the API server and the operator)")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="files, directories or - (stdin)")
    p.add_argument(
        "-f", "--filename", action="append", type=Path, default=[], metavar="FILE", help="the same, as kubectl takes it"
    )
    p.add_argument("--local", action="store_true", help="only what `fmbench-k8s run` needs (no report.s3)")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.add_argument("--price-table", type=Path, help=PRICE_TABLE_HELP)
    p.set_defaults(func=_validate)


def _add_crd(sub: Any) -> None:
    p = _command(sub, "crd", "print the Benchmark CustomResourceDefinition generated from the models")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=_crd)


def _add_run(sub: Any) -> None:
    p = _command(sub, "run", "run a Benchmark on this machine (simulators, Locust, Prometheus, analysis)")
    p.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="Benchmark YAML (the file kubectl apply takes), - for stdin"
    )
    p.add_argument("-f", "--filename", type=Path, metavar="FILE", help="the same, as kubectl takes it")
    p.add_argument(
        "-o",
        "--output",
        default="table",
        metavar="FORMAT",
        help="what to print at the end: table, json or yaml (json/yaml: the result alone on stdout, the rest on "
        "stderr); a directory or s3:// URI here is taken as --output-dir, as before",
    )
    output_dir = "where the run goes: a directory or s3://BUCKET/PREFIX (default: results)"
    p.add_argument("--output-dir", metavar="DIR", help=output_dir)
    p.add_argument("--dry-run", action="store_true", help="print the plan (variants, stages, duration) and exit")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus (no server metrics)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (faster)")
    p.add_argument("--price-table", type=Path, help=PRICE_TABLE_HELP)
    engine_help = "serve engine: variants with this machine's engine (vllm, sglang), e.g. vllm=/opt/vllm/bin/python"
    p.add_argument("--engine-python", action="append", default=[], metavar="ENGINE=PYTHON", help=engine_help)
    p.set_defaults(func=_run)


def _add_analyze(sub: Any) -> None:
    p = _command(sub, "analyze", "records → report (what the in-cluster analysis Job runs)")
    p.add_argument("run", nargs="?", metavar="RUN", help="the run directory: local path or s3://BUCKET/PREFIX")
    p.add_argument("--records", help="the same as RUN")
    p.add_argument("--spec", type=Path, help="the Benchmark YAML of the run (default: the run's own spec.yaml)")
    p.add_argument("--output-dir", metavar="DIR", help="where the report goes (default: the run directory)")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="how to print the result")
    p.add_argument("--run-id", help="run id (default: the last path element of --records)")
    p.add_argument("--prometheus-url", help="Prometheus for server-side metrics (default: spec.prometheus.url)")
    p.add_argument("--summary-file", type=Path, help="also write the compact summary JSON here")
    p.add_argument("--partial", action="store_true", help="mark the report partial (the run did not finish)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--price-table", type=Path, help=PRICE_TABLE_HELP)
    ran_on = "instance types a variant's pods ran on (the operator passes them); what ran is priced"
    p.add_argument("--ran-on", action="append", default=[], metavar="VARIANT=TYPE[,TYPE]", help=ran_on)
    bought = "capacity types (on-demand, spot, reserved) of the nodes a variant's pods ran on; what ran is priced"
    p.add_argument("--capacity-type", action="append", default=[], metavar="VARIANT=TYPE[,TYPE]", help=bought)
    p.set_defaults(func=_analyze)


def _add_compare(sub: Any) -> None:
    p = _command(
        sub, "compare", "compare a run (B) with a baseline (A); exit 4 on a significant regression (a CI gate)"
    )
    p.add_argument("run_a", metavar="RUN_A", help="the baseline: run directory or report.json (local or s3://)")
    p.add_argument("run_b", metavar="RUN_B", help="the candidate: run directory or report.json (local or s3://)")
    p.add_argument("--threshold", type=float, default=0.05, help="smallest relative change that counts")
    p.add_argument(
        "--allow-different", action="store_true", help="compare runs of different Benchmarks, SLOs or workloads"
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write the verdicts as JUnit XML (for CI)")
    p.set_defaults(func=_compare)


def _add_day_profile(sub: Any) -> None:
    p = _command(sub, "day-profile", "turn a request trace into analysis.day's 24 hourly rates (to price a real day)")
    p.add_argument("trace", metavar="TRACE", help="the trace: a path or s3://BUCKET/KEY")
    p.add_argument("--format", choices=("azure", "mooncake"), required=True, help="the trace's format")
    p.set_defaults(func=_day_profile)


def _add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="serve the model-server simulator (OpenAI/TGI/Triton APIs); --help lists its flags",
        add_help=False,
    )
    p.add_argument("simulator_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_simulate)


def _add_loadgen(sub: Any) -> None:
    p = sub.add_parser("loadgen", help="a load generator master or worker (what the Locust pods run)", add_help=False)
    p.add_argument("loadgen_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_loadgen)


def _add_operator(sub: Any) -> None:
    p = sub.add_parser("operator", help="run the Kubernetes operator (kopf); --help lists its flags", add_help=False)
    p.add_argument("operator_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_operator)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pass_through = {"simulate": (_simulate, "simulator_args"), "loadgen": (_loadgen, "loadgen_args"),
                    "operator": (_operator, "operator_args")}  # fmt: skip
    if argv and argv[0] in pass_through:  # these parse their own flags, --help included
        func_, dest = pass_through[argv[0]]
        return func_(argparse.Namespace(**{dest: argv[1:]}))
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:  # a second Ctrl-C: whatever was started has been stopped on the way out
        print(f"{args.command}: aborted", file=sys.stderr)
        return exits.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
