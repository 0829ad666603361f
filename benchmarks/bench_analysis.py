"""Analysis throughput: 1M synthetic request records → report.json (and with plots).

    .venv/bin/python benchmarks/bench_analysis.py [--requests 1000000] [--output-tokens 128]

Writes the records once (Parquet shards in a temporary LocalStorage, as the load generator would),
then runs ``analyze_run`` twice in fresh child processes pinned to one CPU core (without and with
plots), and prints wall time and peak RSS of each. Targets: ≤ 10 s and ≤ 2 GB without plots,
≤ 30 s with plots. Every phase runs in its own process and this one stays small, because a child
inherits its parent's peak RSS (``ru_maxrss`` survives fork and exec).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VARIANTS = 2
LEVELS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128)


def _spec() -> object:
    from fmbench_k8s.api.spec import BenchmarkSpec

    return BenchmarkSpec.model_validate({
        "variants": [
            {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
            {"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "simulator"},
        ],
        "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 128}},
        "slo": {"latency": {"metric": "e2e", "percentile": 95, "maxSeconds": 6.0}},
    })  # fmt: skip


def generate(root: Path, requests: int, output_tokens: int) -> float:
    from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
    from fmbench_k8s.storage import LocalStorage

    per_stage = requests // (VARIANTS * len(LEVELS))
    variants = [
        SyntheticVariant("g5", LEVELS, 0.15, 0.02, 0.01, 0.002, 512, output_tokens, requests_per_stage=per_stage),
        SyntheticVariant("g6e", LEVELS, 0.1, 0.012, 0.006, 0.002, 512, output_tokens, requests_per_stage=per_stage),
    ]
    started = time.perf_counter()
    table, stages = synthesize_table(variants, stage_s=600, warmup_s=30, drain_s=60, workers=4)
    write_run(LocalStorage(root), table, stages)
    return time.perf_counter() - started


def analyze(root: Path, plots: bool) -> None:
    """Child process: one core, one analysis, print JSON with the timing."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    from fmbench_k8s.analysis.run import analyze_run
    from fmbench_k8s.storage import LocalStorage

    spec = _spec()
    started = time.perf_counter()
    summary = analyze_run(spec, LocalStorage(root), benchmark="bench", run_id="r", plots=plots)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec = summary.recommendation.doc() if summary.recommendation is not None else None
    print(json.dumps({"seconds": elapsed, "peak_rss_mb": rss_mb, "recommendation": rec}))


def _headline(requests: int, result: dict[str, Any], target_s: float) -> None:
    from headline import record  # benchmarks/ is the script's own folder, first on sys.path

    time_ratio, rss_ratio = result["seconds"] / target_s, result["peak_rss_mb"] / 2048
    record(f"analysis-{requests // 1_000_000}M", f"{requests:,} records → report.json, one core: "
           f"{result['seconds']:.1f} s / {target_s:g} s = {time_ratio:.2f}, peak RSS "
           f"{result['peak_rss_mb']:,.0f} MiB / 2048 MiB = {rss_ratio:.2f} (targets ≤ 1)",
           time_ratio <= 1 and rss_ratio <= 1)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--output-tokens", type=int, default=128, help="mean output tokens (ITL gaps per request + 1)")
    parser.add_argument("--no-plots", action="store_true", help="only report.json (the 10M target has no plots)")
    parser.add_argument("--child", choices=["generate", "plain", "plots"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "generate":
        print(json.dumps({"seconds": generate(args.dir, args.requests, args.output_tokens)}))
        return 0
    if args.child:
        analyze(args.dir, args.child == "plots")
        return 0
    # #21: 10M records in ≤ 30 s; 1M (and smaller) in ≤ 10 s. Both ≤ 2 GB.
    plain_target_s = 30.0 if args.requests > 1_000_000 else 10.0
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        root = Path(tmp)
        cmd = [sys.executable, __file__, "--child", "generate", "--dir", str(root), "--requests", str(args.requests),
               "--output-tokens", str(args.output_tokens)]  # fmt: skip
        gen = subprocess.run(cmd, check=True, capture_output=True, text=True)
        gen_s = json.loads(gen.stdout.strip().splitlines()[-1])["seconds"]
        size_mb = sum(p.stat().st_size for p in root.rglob("*.parquet")) / 2**20
        print(f"records: {args.requests:,} requests, mean {args.output_tokens} output tokens; "
              f"{size_mb:,.0f} MiB Parquet, generated in {gen_s:.1f} s")  # fmt: skip
        for mode, target_s in (("plain", plain_target_s), ("plots", 30.0))[: 1 if args.no_plots else 2]:
            cmd = [sys.executable, __file__, "--child", mode, "--dir", str(root)]
            started = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **ONE_CORE_ENV})
            total = time.perf_counter() - started
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{'report.json' if mode == 'plain' else 'with plots '}: analyze_run {result['seconds']:.2f} s "
                f"(process incl. imports {total:.2f} s), peak RSS {result['peak_rss_mb']:,.0f} MiB, one core; "
                f"target ≤ {target_s:g} s" + (", ≤ 2048 MiB" if mode == "plain" else "")
            )
            if mode == "plain":
                _headline(args.requests, result, target_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
