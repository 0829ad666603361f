"""What a local run will do, decided before anything starts (also what ``--dry-run`` prints)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fmbench_k8s.api.benchmark import Benchmark
from fmbench_k8s.api.spec import Levels, Load, Variant
from fmbench_k8s.contract.engines import ENGINES, engine_info, variant_api


class PlanError(ValueError):
    """The spec cannot run locally; one line per problem, naming the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class VariantPlan:
    name: str
    api: str
    target: str  # "simulator <instanceType>" or the endpoint
    levels: str
    max_stages: int
    max_seconds: float


def level_summary(load: Load) -> tuple[str, int]:
    """Human summary of the levels and the most stages they can take."""
    levels: Levels = load.active_levels
    unit = "concurrency" if load.arrival == "closed" else f"{load.arrival} req/s"
    if levels.levels is not None:
        return f"{unit} {', '.join(f'{v:g}' for v in levels.levels)}", len(levels.levels)
    assert levels.min is not None and levels.max is not None
    doublings = max(1, math.ceil(math.log2(levels.max / levels.min)) + 1)
    if load.mode == "search":
        return f"{unit} search in [{levels.min:g}, {levels.max:g}]", load.max_stages
    return f"{unit} {levels.min:g}..{levels.max:g} doubling", doublings


def _target(variant: Variant, engines: Mapping[str, str]) -> str:
    if variant.endpoint is not None:
        ep = variant.endpoint
        return ep.url or ep.model_id or ep.endpoint_name or ep.api
    if variant.engine is not None and variant.engine in engines:
        return f"{variant.engine} started here ({engines[variant.engine]})"
    return f"simulator profile {variant.instance_type}"


def plan_run(bench: Benchmark, engines: Mapping[str, str] | None = None) -> list[VariantPlan]:
    """Refuses, naming the variant, engines that need a cluster. ``engines``: engine → the Python
    that serves it on this machine (``--engine-python``), for engines that can run as a process."""
    engines = engines or {}
    problems = []
    for engine in engines:
        if engine not in ENGINES or engine_info(engine).local_module is None:
            local = sorted(e for e, i in ENGINES.items() if i.local_module)
            problems.append(f"--engine-python: {engine!r} cannot be started here; engines that can: {', '.join(local)}")
    for i, v in enumerate(bench.spec.variants):
        if v.engine is not None and engine_info(v.engine).needs_cluster and v.engine not in engines:
            hint = f" or --engine-python {v.engine}=PYTHON" if engine_info(v.engine).local_module else ""
            problems.append(
                f"spec.variants[{i}].engine: {v.engine!r} ({v.name}) needs a Kubernetes cluster: run it with "
                f"`kubectl apply -f` and the operator, or give the variant an endpoint: pointing at a running "
                f"server{hint} (or use engine: simulator to try it locally)"
            )
    if problems:
        raise PlanError(problems)
    load = bench.spec.load
    levels, stages = level_summary(load)
    per_stage = load.warmup_s + load.stage_duration_s + load.drain_s
    return [
        VariantPlan(v.name, variant_api(v), _target(v, engines), levels, stages, stages * per_stage)
        for v in bench.spec.variants
    ]
