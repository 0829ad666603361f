"""The ``fmbench-k8s`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fmbench_k8s import __version__
from fmbench_k8s.api.benchmark import SpecError, is_benchmark_document, load_documents, parse_benchmark


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            docs = [d for d in load_documents(path) if is_benchmark_document(d)]
            if not docs:
                raise SpecError(str(path), ["document: no fmbench.io Benchmark found in the file"])
            for doc in docs:
                parse_benchmark(doc, str(path))
        except SpecError as err:
            failed += 1
            for problem in err.problems:
                print(f"{err.source}: {problem}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{path}: valid ({len(docs)} Benchmark{'s' if len(docs) > 1 else ''})")
    return 1 if failed else 0


def _crd(args: argparse.Namespace) -> int:
    from fmbench_k8s.api.crd import render_crd

    text = render_crd()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmbench-k8s",
        description="Find the cheapest instance type and count that serve an LLM workload under a latency SLO.",
    )
    parser.add_argument("--version", action="version", version=f"fmbench-k8s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check Benchmark YAML files offline (same rules as the API server)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.set_defaults(func=_validate)

    p = sub.add_parser("crd", help="print the Benchmark CustomResourceDefinition generated from the models")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=_crd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
