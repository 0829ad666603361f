"""The Benchmark API (fmbench.io/v1alpha1) as typed models."""

from fmbench_k8s.api.benchmark import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Benchmark,
    SpecError,
    load_benchmark,
    parse_benchmark,
)
from fmbench_k8s.api.spec import BenchmarkSpec, Variant
from fmbench_k8s.api.status import BenchmarkStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Benchmark",
    "BenchmarkSpec",
    "BenchmarkStatus",
    "SpecError",
    "Variant",
    "load_benchmark",
    "parse_benchmark",
]
