"""The cost of a day of traffic (analysis.day; docs/cost-model.md, "A day of traffic").

With a variant's measured capacity per instance X₁ (requests/min at c*, ``throughputRpmPerInstance``)
and headroom h, hour k of the day needs N_k = ⌈R_k / (h × X₁)⌉ instances (none for R_k = 0):

- a **static** fleet runs max_k N_k instances all day;
- an **autoscaled** fleet runs max(N_k, minInstances) in hour k, and an instance added at an hour's
  start is paid from scaleUpDelay before it (it must be serving when the hour begins); instances
  leave at the hour's end. The day repeats, so hour 0 follows hour 23.

A token-priced variant costs its price per request whatever the fleet. Costs per million tokens
count every prompt and output token of the day (the mean prompt and output lengths at c*).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fmbench_k8s.analysis.sizing import Sizing, instances_needed
from fmbench_k8s.api.spec import Day


@dataclass(frozen=True)
class DayCost:
    requests: float  # in the day
    tokens: float  # prompt and output tokens in the day
    static_instances: int | None  # None: token-priced
    static_cost: float  # USD per day
    autoscaled_instance_hours: float | None
    autoscaled_cost: float
    upper_bound: bool  # c* is a lower bound: the instance counts and costs are upper bounds

    @property
    def static_per_1m_tokens(self) -> float | None:
        return self.static_cost / self.tokens * 1e6 if self.tokens > 0 else None

    @property
    def autoscaled_per_1m_tokens(self) -> float | None:
        return self.autoscaled_cost / self.tokens * 1e6 if self.tokens > 0 else None


def hourly_instances(rates: Sequence[float], headroom: float, per_instance: float) -> list[int]:
    return [instances_needed(r, headroom, per_instance) if r > 0 else 0 for r in rates]


def day_cost(day: Day, sizing: Sizing, headroom: float, prompt_tokens: float, output_tokens: float) -> DayCost | None:
    """The day's cost with ``sizing``'s capacity and price; None where the variant has no answer."""
    if not sizing.recommendable or sizing.cost is None:
        return None
    rates = day.hourly_requests_per_minute
    requests = sum(rates) * 60
    tokens = requests * (prompt_tokens + output_tokens)
    price = sizing.price
    if price.kind == "token":
        total = sizing.cost.cost_per_request * requests
        return DayCost(requests, tokens, None, total, None, total, False)
    per_instance, hourly = sizing.throughput_rpm_per_instance, price.instance
    assert per_instance is not None and hourly is not None  # recommendable and instance-priced
    need = hourly_instances(rates, headroom, per_instance)
    fleet = [max(n, day.min_instances) for n in need]
    lead = day.scale_up_delay_s / 3600
    added = sum(max(0, fleet[k] - fleet[k - 1]) for k in range(24))  # fleet[-1]: yesterday's last hour
    hours = sum(fleet) + added * lead
    static = max(need)
    return DayCost(
        requests=requests,
        tokens=tokens,
        static_instances=static,
        static_cost=static * 24 * hourly.usd_per_hour,
        autoscaled_instance_hours=hours,
        autoscaled_cost=hours * hourly.usd_per_hour,
        upper_bound=sizing.lower_bound,
    )
