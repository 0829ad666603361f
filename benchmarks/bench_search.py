"""The search's economy: stages spent to find c*, against a grid at the same resolution and vLLM's
workload explorer (docs/performance.md, "The search's economy").

Each case is a simulator instance profile (fmbench_k8s/simulator/profiles.py) with a workload and
an E2E bound; its true c* follows from the simulator's timing model, so every strategy's answer
can be checked. A stage's verdict is that model's E2E at the level against the bound: exact, as a
stage with enough samples and a bound outside the percentile's interval would be (no noise).

- **search**: the project's planner (loadgen/plan.py) over concurrency 1..256, tolerance 0.1, at
  most 12 stages;
- **grid**: every level of a geometric grid with the search's resolution (each level ≤ 1.1× the
  one below, integers), the way a sweep would find c* to the same precision;
- **explorer**: vLLM's `vllm bench sweep serve_workload` shape: concurrency 1, concurrency 256,
  and 8 levels evenly spaced between them (10 in all).

Stage-minutes are stages × one stage's length, the same for every strategy, so the ratio of stages
is the ratio of GPU-minutes. A strategy's c* is "within one step" when it is at most 10 % below
the truth (the search's tolerance) and never above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmbench_k8s.api.spec import Load
from fmbench_k8s.loadgen.plan import planner_for
from fmbench_k8s.simulator.params import SimParams, estimate
from fmbench_k8s.simulator.profiles import PROFILES

TOP = 256
TOLERANCE = 0.1
WORKLOADS = ((512, 128), (2048, 256))  # (prompt tokens, output tokens)
BOUNDS_S = (2.0, 5.0, 12.0)


def e2e_s(p: SimParams, concurrency: int, prompt: int, output: int) -> float:
    """The timing model's E2E in a closed loop of ``concurrency`` users: each slot serves one
    request after another; beyond max_num_seqs users queue for slots (docs/simulator.md)."""
    service = estimate(p, prompt, output, running=min(concurrency, p.max_num_seqs)).e2e_s
    return service * max(1.0, concurrency / p.max_num_seqs)


@dataclass(frozen=True)
class Outcome:
    stages: int
    c_star: float | None


def search(meets: dict[int, bool]) -> Outcome:
    load = Load.model_validate({"mode": "search", "concurrency": {"min": 1, "max": TOP}, "tolerance": TOLERANCE,
                                "maxStages": 12})  # fmt: skip
    planner = planner_for(load)
    while (level := planner.next_level()) is not None:
        planner.record(level, meets[int(level)])
    return Outcome(len(planner.trials), planner.best)


def grid_levels() -> list[int]:
    levels = [1]
    while levels[-1] < TOP:
        levels.append(min(TOP, max(levels[-1] + 1, math.floor(levels[-1] * (1 + TOLERANCE)))))
    return levels


def run_all(levels: list[int], meets: dict[int, bool]) -> Outcome:
    passed = [c for c in levels if meets[c]]
    return Outcome(len(levels), max(passed) if passed else None)


def within_one_step(found: float | None, truth: int) -> bool:
    if truth == 0:
        return found is None
    return found is not None and truth * (1 - TOLERANCE) <= found <= truth


def main() -> None:
    explorer = sorted({round(x) for x in (1 + i * (TOP - 1) / 9 for i in range(10))})
    grid = grid_levels()
    totals = {"search": [0, 0], "grid": [0, 0], "explorer": [0, 0]}
    inner = {"search": [0, 0], "grid": [0, 0], "explorer": [0, 0]}  # cases with 1 < c* < TOP
    cases = inner_cases = 0
    print(f"{'profile':<15} {'P/G':>9} {'L (s)':>5} {'c*':>4} | {'search':>12} | {'grid':>12} | {'explorer':>12}")
    for name, profile in sorted(PROFILES.items()):
        for prompt, output in WORKLOADS:
            for bound in BOUNDS_S:
                meets = {c: e2e_s(profile.params, c, prompt, output) <= bound for c in range(1, TOP + 1)}
                truth = max((c for c, ok in meets.items() if ok), default=0)
                results = {"search": search(meets), "grid": run_all(grid, meets), "explorer": run_all(explorer, meets)}
                cases += 1
                interior = 1 < truth < TOP
                inner_cases += interior
                cells = []
                for key, r in results.items():
                    good = within_one_step(r.c_star, truth)
                    for table in (totals, inner) if interior else (totals,):
                        table[key][0] += r.stages
                        table[key][1] += good
                    cells.append(f"{r.stages:>3} st {r.c_star or 0:>4g}{'' if good else ' ✗'}")
                print(
                    f"{name:<15} {prompt:>4}/{output:<4} {bound:>5g} {truth:>4} | "
                    + " | ".join(f"{c:>12}" for c in cells)
                )
    for title, table, n in (("all cases", totals, cases), ("cases with 1 < c* < 256", inner, inner_cases)):
        print(f"\n{title} ({n}):")
        for key, (stages, right) in table.items():
            print(f"  {key:<9} {stages:>5} stages ({stages / n:.1f} per case), c* within one step in {right}/{n}")
        print(f"  search / grid stage-minutes: {table['search'][0] / table['grid'][0]:.0%} (target ≤ 30%); "
              f"search / explorer: {table['search'][0] / table['explorer'][0]:.0%}")  # fmt: skip
    from headline import record  # benchmarks/ is the script's own folder, first on sys.path

    ratio = totals["search"][0] / totals["grid"][0]
    inner_ratio = inner["search"][0] / inner["grid"][0]
    right = totals["search"][1]
    record("search", f"stage-minutes, search / grid at the same resolution: {ratio:.2f} over {cases} cases "
           f"({inner_ratio:.2f} where 1 < c* < {TOP}); c* within one step in {right}/{cases} (target ≤ 0.30, all)",
           ratio <= 0.30 and right == cases)  # fmt: skip


if __name__ == "__main__":
    main()
