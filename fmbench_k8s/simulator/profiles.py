"""Illustrative instance profiles: simulator parameters keyed by EC2 type.

ILLUSTRATIVE ONLY.  These numbers are not measurements.  They are rough,
hand-picked shapes for serving one ~8B-parameter model (one engine per
instance, tensor-parallel across its accelerators) so that a simulated sweep
over instance types shows plausible, visibly different trade-offs: small
single-GPU types are cheap but have few slots and slow decode, g6e (L40S) is
faster and roomier than g5/g6 but pricier, p4d/p5 have huge capacity at a
high hourly price, Inferentia/Trainium types batch statically (small
slowdown, fewer slots), and the CPU type is very slow.  Prices are rough
on-demand USD/hour figures for orientation, not quotes.  Benchmark real
hardware before drawing any conclusion.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fmbench_k8s.simulator.params import SimParams

# Used for nodes with no accelerator (e.g. a local kind cluster).
DEFAULT_INSTANCE_TYPE = "m5.xlarge"


@dataclass(frozen=True, slots=True)
class InstanceProfile:
    instance_type: str
    accelerator: str
    params: SimParams
    description: str
    illustrative: bool = True


def _p(
    instance_type: str,
    accelerator: str,
    description: str,
    *,
    max_num_seqs: int,
    prefill_base_s: float,
    prefill_s_per_token: float,
    decode_base_s: float,
    batch_slowdown: float,
) -> InstanceProfile:
    params = SimParams(
        max_num_seqs=max_num_seqs,
        prefill_base_s=prefill_base_s,
        prefill_s_per_token=prefill_s_per_token,
        decode_base_s=decode_base_s,
        batch_slowdown=batch_slowdown,
    )
    text = f"Illustrative (not measured): 8B model on {accelerator}. {description}"
    return InstanceProfile(instance_type, accelerator, params, text)


_ALL = (
    _p("g5.2xlarge", "1x NVIDIA A10G 24GB",
       "Cheap; bf16 weights leave little KV cache, so few slots.",
       max_num_seqs=16, prefill_base_s=0.030, prefill_s_per_token=0.00020,
       decode_base_s=0.030, batch_slowdown=0.6),
    _p("g5.12xlarge", "4x NVIDIA A10G 24GB (TP=4)",
       "Four A10Gs: faster decode and many more slots, at ~4.7x the price.",
       max_num_seqs=64, prefill_base_s=0.025, prefill_s_per_token=0.00007,
       decode_base_s=0.014, batch_slowdown=0.6),
    _p("g6.2xlarge", "1x NVIDIA L4 24GB",
       "Cheapest GPU; low memory bandwidth makes decode the slowest of the GPUs.",
       max_num_seqs=16, prefill_base_s=0.035, prefill_s_per_token=0.00025,
       decode_base_s=0.045, batch_slowdown=0.6),
    _p("g6e.2xlarge", "1x NVIDIA L40S 48GB",
       "Faster and roomier than g5/g6 but pricier.",
       max_num_seqs=48, prefill_base_s=0.020, prefill_s_per_token=0.00010,
       decode_base_s=0.020, batch_slowdown=0.5),
    _p("p4d.24xlarge", "8x NVIDIA A100 40GB (TP=8)",
       "Very high capacity; an 8B model underuses it, so cost per token is high.",
       max_num_seqs=256, prefill_base_s=0.015, prefill_s_per_token=0.00002,
       decode_base_s=0.008, batch_slowdown=0.8),
    _p("p5.48xlarge", "8x NVIDIA H100 80GB (TP=8)",
       "Lowest latency and most capacity; the most expensive.",
       max_num_seqs=256, prefill_base_s=0.010, prefill_s_per_token=0.00001,
       decode_base_s=0.005, batch_slowdown=0.6),
    _p("inf2.8xlarge", "1x AWS Inferentia2 (2 NeuronCores, TP=2)",
       "Static batching: few slots, little slowdown as the batch fills.",
       max_num_seqs=8, prefill_base_s=0.060, prefill_s_per_token=0.00030,
       decode_base_s=0.030, batch_slowdown=0.2),
    _p("inf2.48xlarge", "12x AWS Inferentia2 (TP=24)",
       "Large Inferentia2: moderate slots, fast decode, statically batched.",
       max_num_seqs=32, prefill_base_s=0.040, prefill_s_per_token=0.00005,
       decode_base_s=0.012, batch_slowdown=0.3),
    _p("trn1.32xlarge", "16x AWS Trainium (TP=32)",
       "Training-class part serving inference: capable but expensive for 8B.",
       max_num_seqs=64, prefill_base_s=0.040, prefill_s_per_token=0.00004,
       decode_base_s=0.010, batch_slowdown=0.3),
    _p("m5.xlarge", "4 vCPU, no accelerator",
       "CPU default: slow prefill and decode, two slots; a smoke-test target.",
       max_num_seqs=2, prefill_base_s=0.100, prefill_s_per_token=0.0020,
       decode_base_s=0.100, batch_slowdown=1.0),
)  # fmt: skip

PROFILES: dict[str, InstanceProfile] = {p.instance_type: p for p in _ALL}


class UnknownInstanceTypeError(KeyError, ValueError):
    """Raised for an instance type with no profile; the message lists known ones."""

    def __str__(self) -> str:
        # KeyError's default str() repr-quotes the message.
        return str(self.args[0])


def get_profile(instance_type: str) -> InstanceProfile:
    try:
        return PROFILES[instance_type]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UnknownInstanceTypeError(
            f"no simulator profile for instance type {instance_type!r}; known types: {known}"
        ) from None


def profile_for(instance_type: str, seed: int = 0, jitter_sigma: float = 0.0) -> SimParams:
    """SimParams of an (illustrative) instance profile."""
    return replace(get_profile(instance_type).params, seed=seed, jitter_sigma=jitter_sigma)
