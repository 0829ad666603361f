"""Property-based tests of the spec models: every valid spec round-trips through its manifest, and
out-of-range values are rejected naming their field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbench_k8s.api import SpecError, parse_benchmark
from fmbench_k8s.api.benchmark import to_manifest
from fmbench_k8s.durations import format_duration

names = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
durations = st.integers(min_value=1000, max_value=24 * 3600 * 1000).map(lambda ms: format_duration(ms / 1000))
positive = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)
tokens = st.fixed_dictionaries({"mean": st.integers(1, 100_000)}, optional={"stddev": st.floats(0, 1000)})


@st.composite
def variants(draw: st.DrawFn) -> list[dict[str, Any]]:
    unique = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    out = []
    for name in unique:
        kind = draw(st.sampled_from(["simulator", "vllm", "openai", "bedrock"]))
        if kind == "openai":
            out.append({"name": name, "endpoint": {"api": "openai-chat", "url": "http://x:8000/v1"}})
        elif kind == "bedrock":
            out.append({"name": name, "endpoint": {"api": "bedrock", "modelId": "m"}})
        else:
            v: dict[str, Any] = {"name": name, "engine": kind, "instanceType": "g6e.2xlarge"}
            v["replicas"] = draw(st.integers(1, 8))
            out.append(v)
    return out


@st.composite
def benchmarks(draw: st.DrawFn) -> dict[str, Any]:
    lo = draw(st.integers(1, 64))
    return {
        "apiVersion": "fmbench.io/v1alpha1",
        "kind": "Benchmark",
        "metadata": {"name": "prop"},
        "spec": {
            "model": {"name": "m"},
            "variants": draw(variants()),
            "workload": {
                "requestsPerMinute": draw(positive),
                "promptTokens": draw(tokens),
                "outputTokens": draw(tokens),
            },
            "slo": {
                "latency": {
                    "metric": draw(st.sampled_from(["e2e", "ttft", "tpot", "itl"])),
                    "percentile": draw(st.floats(0.5, 99.5)),
                    "maxSeconds": draw(positive),
                },
                "maxErrorRate": draw(st.floats(0, 1)),
            },
            "load": {
                "mode": draw(st.sampled_from(["search", "sweep"])),
                "concurrency": {"min": lo, "max": lo + draw(st.integers(0, 256))},
                "warmup": draw(durations),
                "stageDuration": draw(durations),
                "workers": draw(st.integers(1, 16)),
            },
            "analysis": {"headroom": draw(st.floats(0.01, 1.0))},
        },
    }


@settings(max_examples=150, deadline=None)
@given(benchmarks())
def test_every_valid_spec_round_trips_through_its_manifest(doc: dict[str, Any]) -> None:
    bench = parse_benchmark(doc)
    again = parse_benchmark(to_manifest(bench))
    assert again == bench


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("slo", "latency", "percentile"), st.one_of(st.floats(max_value=0), st.floats(min_value=100))),
        (("slo", "maxErrorRate"), st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001))),
        (("workload", "requestsPerMinute"), st.floats(max_value=0)),
        (("analysis", "headroom"), st.one_of(st.floats(max_value=0), st.floats(min_value=1.000001))),
        (("load", "workers"), st.integers(max_value=0)),
    ],
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_out_of_range_values_are_rejected_naming_the_field(
    path: tuple[str, ...], bad: st.SearchStrategy[float], data: st.DataObject
) -> None:
    doc = data.draw(benchmarks())
    value = data.draw(bad.filter(lambda x: not math.isnan(x)))  # NaN is rejected too, by another message
    node = doc["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SpecError) as err:
        parse_benchmark(doc)
    field = "spec." + ".".join(path)
    assert any(p.startswith(field + ":") for p in err.value.problems), err.value.problems
