"""What `fmbench-k8s run` accepts before anything starts (fmbench_k8s/local/plan.py)."""

from __future__ import annotations

import pytest
import yaml

from fmbench_k8s.api import parse_benchmark
from fmbench_k8s.local.plan import PlanError, plan_run
from tests.corpus import REPO


def test_cluster_engines_are_refused_unless_this_machine_serves_them() -> None:
    bench = parse_benchmark(yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text()))
    with pytest.raises(PlanError) as refused:
        plan_run(bench)
    assert any("or --engine-python vllm=PYTHON" in p for p in refused.value.problems)
    plans = plan_run(bench, {"vllm": "/opt/vllm/bin/python"})
    assert [p.target for p in plans if p.target.startswith("vllm")] == [
        "vllm started here (/opt/vllm/bin/python)"
    ] * len([v for v in bench.spec.variants if v.engine == "vllm"])


def test_an_engine_that_cannot_run_as_a_process_is_named() -> None:
    bench = parse_benchmark(yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text()))
    with pytest.raises(PlanError) as refused:
        plan_run(bench, {"vllm": "/p", "tgi": "/p"})
    assert "--engine-python: 'tgi' cannot be started here; engines that can: sglang, vllm" in refused.value.problems
