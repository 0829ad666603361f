"""Where requests go (target.py) and how a request becomes a record row (request.py)."""

from __future__ import annotations

import struct

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.contract.records import SCHEMA, itl_gaps
from fmbench_k8s.loadgen.request import RequestState, StageContext, to_row
from fmbench_k8s.loadgen.target import TargetError, engine_api, resolve_target


def _spec(*variants: dict[str, object], model: str | None = None) -> BenchmarkSpec:
    doc: dict[str, object] = {
        "variants": list(variants),
        "workload": {"requestsPerMinute": 60, "promptTokens": {"mean": 10}, "outputTokens": {"mean": 5}},
        "slo": {"latency": {"maxSeconds": 1}},
    }
    if model:
        doc["model"] = {"name": model}
    return BenchmarkSpec.model_validate(doc)


@pytest.mark.parametrize(("engine", "api"), [("vllm", "openai-chat"), ("sglang", "openai-chat"),
                                             ("neuronx-vllm", "openai-chat"), ("djl-lmi", "openai-chat"),
                                             ("simulator", "openai-chat"), ("tgi", "tgi"),
                                             ("triton-trtllm", "triton")])  # fmt: skip
def test_engine_api_mapping(engine: str, api: str) -> None:
    assert engine_api(engine) == api


def test_engine_variants_need_the_endpoint_url_and_use_the_spec_model() -> None:
    spec = _spec({"name": "a", "engine": "vllm", "instanceType": "g6e.2xlarge"},
                 {"name": "t", "engine": "triton-trtllm", "instanceType": "g6e.2xlarge"}, model="org/m")  # fmt: skip
    with pytest.raises(TargetError, match="--endpoint-url is required"):
        resolve_target(spec, spec.variants[0], env={})
    t = resolve_target(spec, spec.variants[0], "http://svc:8000/v1", env={"FMBENCH_API_KEY": "k"})
    assert (t.api, t.url, t.model, t.extra_body) == ("openai-chat", "http://svc:8000/v1", "org/m", {"ignore_eos": True})
    assert t.headers == {"Authorization": "Bearer k"}
    tri = resolve_target(spec, spec.variants[1], "http://svc:8000", env={})
    assert (tri.api, tri.model, tri.extra_body) == ("triton", "ensemble", {})
    other = resolve_target(spec, spec.variants[0], "http://x/v1", "openai-completions", env={})
    assert other.api == "openai-completions"
    with pytest.raises(TargetError, match="unknown API"):
        resolve_target(spec, spec.variants[0], "http://x", "grpc", env={})


def test_endpoint_variants_use_their_spec_and_accept_overrides() -> None:
    spec = _spec(
        {"name": "o", "endpoint": {"api": "openai-chat", "url": "http://vllm:8000/v1", "model": "llama"}},
        {"name": "s", "endpoint": {"api": "sagemaker", "endpointName": "ep", "payload": "tgi"}},
        {"name": "b", "endpoint": {"api": "bedrock", "modelId": "anthropic.claude", "region": "eu-west-1"}},
    )
    o = resolve_target(spec, spec.variants[0], env={})
    assert (o.api, o.url, o.model, o.extra_body) == ("openai-chat", "http://vllm:8000/v1", "llama", {})
    s = resolve_target(spec, spec.variants[1], "http://127.0.0.1:9", env={"AWS_REGION": "us-west-2"})
    assert (s.api, s.endpoint_name, s.url, s.region, s.extra_body) == (
        "sagemaker", "ep", "http://127.0.0.1:9", "us-west-2", {"stream": True})  # fmt: skip
    b = resolve_target(spec, spec.variants[2], env={})
    assert (b.model_id, b.region, b.url) == ("anthropic.claude", "eu-west-1", None)


def test_an_endpoint_asks_for_exact_lengths_and_sampling_when_the_spec_says_so() -> None:
    request = {"ignoreEos": True, "temperature": 0.0, "topP": 0.9, "stop": ["###"]}
    spec = _spec({"name": "o", "endpoint": {"api": "openai-chat", "url": "http://vllm:8000/v1", "request": request}})
    got = resolve_target(spec, spec.variants[0], env={})
    assert got.extra_body == {"ignore_eos": True, "temperature": 0.0, "top_p": 0.9, "stop": ["###"]}


def test_the_engine_behind_an_endpoint_decides_exact_lengths_unless_the_spec_says_otherwise() -> None:
    def body(endpoint: dict[str, object]) -> dict[str, object]:
        spec = _spec({"name": "o", "endpoint": {"api": "openai-chat", "url": "http://e:8000/v1", **endpoint}})
        return resolve_target(spec, spec.variants[0], env={}).extra_body

    assert body({"engine": "vllm"}) == {"ignore_eos": True}  # vLLM honours it: exact lengths by default
    assert body({"engine": "tgi"}) == {}  # TGI does not
    assert body({}) == {}  # unknown engine: nothing it might refuse
    assert body({"engine": "vllm", "request": {"ignoreEos": False}}) == {}  # the spec's word wins


def test_an_extra_body_is_sent_as_given_and_cannot_take_the_workloads_fields() -> None:
    extra = [{"name": "top_k", "value": 20}, {"name": "chat_template_kwargs", "value": {"enable_thinking": False}}]
    spec = _spec({"name": "o", "endpoint": {"api": "openai-chat", "url": "http://e:8000/v1",
                                            "request": {"extraBody": extra, "temperature": 0.5}}})  # fmt: skip
    assert resolve_target(spec, spec.variants[0], env={}).extra_body == {
        "top_k": 20, "chat_template_kwargs": {"enable_thinking": False}, "temperature": 0.5}  # fmt: skip
    owned = [{"name": "stream", "value": False}, {"name": "max_tokens", "value": 1}]
    with pytest.raises(ValidationError, match=r"max_tokens, stream: set by the workload"):
        _spec({"name": "o", "endpoint": {"api": "openai-chat", "url": "http://e:8000/v1",
                                         "request": {"extraBody": owned}}})  # fmt: skip


def _ctx() -> StageContext:
    return StageContext("v", 2, "w0", 8.0, None, steady_start=10.0, steady_end=20.0)


def test_rows_match_the_schema_for_every_outcome() -> None:
    ok = RequestState("w0-2-1", 12.0, 100, t_sent=12.001, t_first_byte=12.01)
    for ts in (12.05, 12.06, 12.08):
        ok.content(ts)
    ok.server_output_tokens = 3
    ok.succeed(12.081)
    err = RequestState("w0-2-2", 21.0, 100, t_sent=21.0)
    err.http_status = 429
    err.fail("http_429", 21.01)
    cut = RequestState("w0-2-3", 19.0, 100, t_sent=19.0)
    cut.content(19.5)
    cut.cut_off("cut_off_at_drain_end")
    rows = [to_row(s, _ctx()) for s in (ok, err, cut)]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert table.num_rows == 3
    r = rows[0]
    assert (r["outcome"], r["ok"], r["error"]) == ("ok", True, None)
    assert (r["in_steady_window"], r["token_source"]) == (True, "server")
    assert r["ttft_s"] == pytest.approx(0.049) and r["e2e_s"] == pytest.approx(0.079)
    assert r["tpot_s"] == pytest.approx(0.015) and itl_gaps(r["itl_s"]) == pytest.approx([0.01, 0.02])
    assert r["itl_mean_s"] == pytest.approx(0.015) and r["itl_max_s"] == pytest.approx(0.02)
    assert (rows[1]["outcome"], rows[1]["error"], rows[1]["http_status"], rows[1]["in_steady_window"]) == (
        "error", "http_429", 429, False)  # fmt: skip
    assert (rows[2]["outcome"], rows[2]["error"], rows[2]["output_tokens"], rows[2]["token_source"]) == (
        "incomplete", "cut_off_at_drain_end", 1, "client")  # fmt: skip


def test_an_api_key_from_a_file_works_and_one_that_would_inject_headers_is_refused() -> None:
    """`kubectl create secret --from-file` keeps the file's newline; CR/LF inside would start a header."""
    spec = _spec({"name": "a", "endpoint": {"api": "openai-chat", "url": "https://api.example.com/v1", "model": "m"}})
    variant = spec.variants[0]
    for raw in ("sk-abc\n", "  sk-abc\r\n", "sk-abc"):
        assert resolve_target(spec, variant, env={"FMBENCH_API_KEY": raw}).headers == {"Authorization": "Bearer sk-abc"}
    for raw, where in (("sk-abc\r\nX-Evil: 1", "0x0d at position 6"), ("sk abc", "0x20 at position 2"),
                       ("sk-\x00", "0x00 at position 3"), ("sk-é", "0xe9 at position 3")):  # fmt: skip
        with pytest.raises(TargetError, match=rf"^FMBENCH_API_KEY \(endpoint.apiKeySecretRef\): .*{where}"):
            resolve_target(spec, variant, env={"FMBENCH_API_KEY": raw})
    with pytest.raises(TargetError, match="the API key is empty"):
        resolve_target(spec, variant, env={"FMBENCH_API_KEY": "\n"})


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.booleans(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6)), min_size=1, max_size=6
    )
)
def test_a_run_of_answer_tokens_counts_as_its_tokens_one_by_one(runs: list[tuple[bool, list[float]]]) -> None:
    """The C reader hands a run of answer tokens' times at once (``answer_tokens``): the state
    after it is the state after ``content`` for each, whatever was received before the run
    (reasoning, or tokens the protocol decoded)."""
    one_by_one, in_runs = RequestState("a", 0.0), RequestState("b", 0.0)
    t = 0.0
    for reasoning_before, gaps in runs:
        if reasoning_before:
            t += 0.5
            one_by_one.content(t, answer=False)
            in_runs.content(t, answer=False)
        stamps = [t := t + g for g in gaps]
        for ts in stamps:
            one_by_one.content(ts)
        in_runs.answer_tokens(memoryview(struct.pack(f"{len(stamps)}d", *stamps)).cast("d"))
    assert in_runs.itl == one_by_one.itl
    fields = ("t_first_token", "t_first_answer", "t_last_token", "content_events")
    assert [getattr(in_runs, f) for f in fields] == [getattr(one_by_one, f) for f in fields]
