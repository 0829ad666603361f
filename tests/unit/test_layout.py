"""The run layout and the one builder of the load generator's and the analysis's command lines
(fmbench_k8s/contract/layout.py): what the operator and the local runner build is what the
programs' own parsers accept."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from fmbench_k8s.cli import build_parser
from fmbench_k8s.contract import layout
from fmbench_k8s.operator import builders
from tests.unit.test_operator_builders import CFG, UID, _bench, _container


def test_run_ids_and_paths() -> None:
    started = datetime(2026, 12, 1, 23, 5, 9, tzinfo=UTC)
    assert layout.run_id(started) == "20261201-230509"
    assert layout.run_id(started, "abcdef0123") == "20261201-230509-abcdef"
    assert layout.run_path("ns", "bench", "r") == "ns/bench/r"
    assert layout.search_key("g5") == "stages/g5.search.json"


def _loadgen_parse(argv: list[list[str]]) -> list[dict[str, object]]:
    """The load generator's own parser, in a process of its own (Locust patches the one it is imported in)."""
    code = (
        "import json, sys\nfrom fmbench_k8s.loadgen.cli import build_parser\n"
        "print(json.dumps([vars(build_parser().parse_args(a)) for a in json.loads(sys.argv[1])], default=str))"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True)
    parsed: list[dict[str, object]] = json.loads(done.stdout)
    return parsed


def test_the_operators_command_lines_are_what_the_programs_accept() -> None:
    bench = _bench()
    variant = bench.spec.variants[0]
    master = _container(builders.loadgen_master_job(bench, variant, UID, "r1", CFG))["args"]
    worker = _container(builders.loadgen_workers_job(bench, variant, UID, "r1", CFG))["args"]
    assert master[0] == worker[0] == "loadgen"
    got_master, got_worker = _loadgen_parse([master[1:], worker[1:]])
    run = builders.run_uri(bench, "r1")
    for got in (got_master, got_worker):
        assert (got["variant"], got["output"], got["run_id"]) == (variant.name, run, "r1")
    assert got_master["expect_workers"] == bench.spec.load.workers
    # The worker's name is its pod's, from the environment: no $(VAR) in args (spec strings are literal).
    assert got_worker["worker_id"] is None
    env = _container(builders.loadgen_workers_job(bench, variant, UID, "r1", CFG))["env"]
    assert {"name": "FMBENCH_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env

    job = builders.analysis_job(
        bench, UID, "r1", CFG, ran_on={variant.name: ["g5.2xlarge"]}, bought={variant.name: ["spot"]}
    )
    args = build_parser().parse_args(_container(job)["args"])
    assert (args.records, args.output_dir, args.run_id, args.ran_on) == (run, run, "r1", [f"{variant.name}=g5.2xlarge"])
    assert args.capacity_type == [f"{variant.name}=spot"]


def test_the_local_runner_and_the_operator_tell_the_load_generator_the_same() -> None:
    """Only the spec's path, the run's folder and the network differ between the two."""
    bench = _bench()
    variant = bench.spec.variants[0]
    target = layout.LoadgenTarget(spec="/run/spec.yaml", variant=variant.name, output="/out", run_id="r1")
    local = layout.loadgen_master_args(target, bind_host="127.0.0.1", master_port=1, expect_workers=2)
    cluster = _container(builders.loadgen_master_job(bench, variant, UID, "r1", CFG))["args"][1:]
    assert local[0] == cluster[0] == "master"
    flags = {a for a in local if a.startswith("--")}
    assert flags <= {a for a in cluster if a.startswith("--")}
