"""The project against a real inference engine: vLLM's CPU build serving a tiny random Llama
(tests/engines/conftest.py). What the simulator cannot show: the engine's own counters and
timers, its chunking of streamed tokens, its queue, its metric names and its argument parser."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from fmbench_k8s.analysis.prometheus import HIT_RATE_SERIES
from fmbench_k8s.contract.engines import server_args
from fmbench_k8s.contract.records import itl_gaps
from fmbench_k8s.local.prometheus import find_prometheus, start_prometheus
from tests.chart.test_dashboards_data import _local_queries, _query
from tests.corpus import REPO
from tests.engines.conftest import MAX_NUM_SEQS, SERVED_NAME, Vllm
from tests.integration.test_loadgen_support import assert_accounting, loadgen, write_spec

pytestmark = pytest.mark.engine
CLI = str(Path(sys.executable).parent / "fmbench-k8s")
PROMETHEUS = find_prometheus() or "prometheus"  # make setup installs Debian's
OUTPUT_TOKENS = 24


def _endpoint(vllm: Vllm, **extra: Any) -> dict[str, Any]:
    request = {"ignoreEos": True, "temperature": 0.0}
    return {"api": "openai-chat", "url": f"{vllm.url}/v1", "model": SERVED_NAME, "request": request, **extra}


def _spec(tmp: Path, vllm: Vllm, *, concurrency: int, seconds: int) -> Path:
    return write_spec(
        tmp / "spec.yaml",
        variants=[{"name": "real", "endpoint": _endpoint(vllm)}],
        workload={"requestsPerMinute": 600, "promptTokens": {"mean": 40, "stddev": 10},
                  "outputTokens": {"mean": OUTPUT_TOKENS}},
        load={"mode": "fixed", "concurrency": {"levels": [concurrency]}, "stageDuration": f"{seconds}s",
              "warmup": "1s", "drain": "10s", "workers": 1},
    )  # fmt: skip


def _started(name: str) -> dict[str, Any]:
    """A variant whose vLLM `fmbench-k8s run --engine-python` starts, with what a CPU needs."""
    cpu = ["--dtype", "float32", "--enforce-eager", "--distributed-executor-backend", "uni", "--max-model-len", "2048",
           "--max-num-seqs", str(MAX_NUM_SEQS)]  # fmt: skip
    env = [{"name": "VLLM_TARGET_DEVICE", "value": "cpu"}, {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"},
           {"name": "VLLM_ENABLE_V1_MULTIPROCESSING", "value": "0"}]  # fmt: skip
    return {"name": name, "engine": "vllm", "instanceType": "m5.xlarge", "args": cpu, "env": env}


def _run_starting_vllm(doc: dict[str, Any], vllm: Vllm, tmp_path: Path) -> Path:
    """`fmbench-k8s run` of ``doc``, starting its engine variants with the reference engine's
    Python; the run's folder."""
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(doc))
    argv = [CLI, "run", str(spec), "--output", str(tmp_path / "out"), "--no-plots", "--engine-python",
            f"vllm={vllm.python}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (run,) = (tmp_path / "out" / "local" / "lgtest").iterdir()
    return run


def _histogram_mean(before: dict[Any, float], after: dict[Any, float], name: str) -> float:
    """The mean of a server histogram's observations between two scrapes."""

    def total(suffix: str, data: dict[Any, float]) -> float:
        return sum(v for (n, _), v in data.items() if n == f"{name}{suffix}")

    count = total("_count", after) - total("_count", before)
    return (total("_sum", after) - total("_sum", before)) / count


def test_records_match_the_engines_own_counters_and_timers(vllm: Vllm, tmp_path: Path) -> None:
    """Over the same window the engine counts the same successes and exactly the same prompt and
    generated tokens as the records (plus the master's one warm-up request, which it reports);
    the client's TTFT and E2E are the engine's plus what lies outside its timers (HTTP,
    tokenisation), never less, and not much more."""
    before = vllm.metrics()
    spec = _spec(tmp_path, vllm, concurrency=MAX_NUM_SEQS * 4, seconds=10)  # 16 streams, 4 slots: a queue
    with loadgen(tmp_path, spec, "real") as run:
        run.start(workers=1)
        assert run.wait(timeout=300) == 0
        df = assert_accounting(run)
    after = vllm.metrics()
    warmup = next(e for e in run.events if e["event"] == "warmup")
    ok = df[df["outcome"] == "ok"]
    assert len(ok) == len(df) > 0, df["error"].value_counts()

    def delta(name: str) -> float:
        return sum(v for (n, _), v in after.items() if n == name) - sum(v for (n, _), v in before.items() if n == name)

    assert delta("vllm:request_success_total") == len(ok) + 1
    assert delta("vllm:prompt_tokens_total") == ok["prompt_tokens"].sum() + warmup["prompt_tokens"]
    assert delta("vllm:generation_tokens_total") == ok["output_tokens"].sum() + warmup["output_tokens"]
    # ignore_eos from the spec's request parameters: every answer has exactly the asked length
    assert (ok["output_tokens"] == OUTPUT_TOKENS).all() and (ok["token_source"] == "server").all()

    server_ttft = _histogram_mean(before, after, "vllm:time_to_first_token_seconds")
    server_e2e = _histogram_mean(before, after, "vllm:e2e_request_latency_seconds")
    client_ttft, client_e2e = float(ok["ttft_s"].mean()), float(ok["e2e_s"].mean())
    # The engine's timers start after the request is parsed and end before the response is
    # written: the client's are longer, by HTTP and (de)tokenisation - milliseconds, not seconds.
    # The client's first token is the first non-empty one: a few empty deltas may come first.
    assert server_ttft <= client_ttft <= server_ttft + 1.0, (server_ttft, client_ttft)
    assert server_e2e <= client_e2e <= server_e2e + 0.5, (server_e2e, client_e2e)
    # 16 streams on 4 slots queued inside the engine, and the engine says so
    assert _histogram_mean(before, after, "vllm:request_queue_time_seconds") > 0


def _plain_request(url: str, prompt: str) -> tuple[float, float]:
    """TTFT and E2E of one streamed chat request, timed the plainest way: a blocking socket, a
    clock before the send, the first non-empty content delta, the last line."""
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": OUTPUT_TOKENS, "ignore_eos": True, "temperature": 0.0}  # fmt: skip
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    ttft = None
    for raw in resp:
        line = raw.strip()
        if ttft is None and line.startswith(b"data: {"):
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                ttft = time.perf_counter() - t0
    e2e = time.perf_counter() - t0
    conn.close()
    assert resp.status == 200 and ttft is not None
    return ttft, e2e


@pytest.mark.alone  # the two clients time the engine seconds apart: another test's load between them moved E2E 50%
def test_one_stream_times_what_a_plain_client_times(vllm: Vllm, tmp_path: Path) -> None:
    """At one stream the load generator's TTFT and E2E are what the plainest client measures on
    the same engine, a moment apart: its clock adds no bias of its own (docs/metrics.md)."""
    spec = _spec(tmp_path, vllm, concurrency=1, seconds=6)
    with loadgen(tmp_path, spec, "real") as run:
        run.start(workers=1)
        assert run.wait(timeout=300) == 0
        ok = run.records().query("outcome == 'ok'")
    prompt = " ".join(["benchmark"] * 36)  # about the records' 40 prompt tokens, with the chat template
    plain = [_plain_request(vllm.url, prompt) for _ in range(max(10, len(ok)))]
    plain_ttft = statistics.median(t for t, _ in plain)
    plain_e2e = statistics.median(e for _, e in plain)
    ours_ttft, ours_e2e = float(ok["ttft_s"].median()), float(ok["e2e_s"].median())
    # The same engine, the same lengths, seconds apart: medians agree within what a shared 2-core
    # machine moves between two runs; a client that added its own delay or stopped its clock early
    # would be off by its whole bias.
    assert abs(ours_ttft - plain_ttft) <= 0.3 * plain_ttft + 0.02, (ours_ttft, plain_ttft)
    assert abs(ours_e2e - plain_e2e) <= 0.3 * plain_e2e + 0.02, (ours_e2e, plain_e2e)


def test_tokens_come_from_usage_when_chunks_carry_several_or_none(vllm: Vllm, tmp_path: Path) -> None:
    """Under load vLLM packs several tokens into one SSE chunk and sends empty deltas (the random
    model emits special tokens): counting content events would be wrong, usage is right."""
    spec = _spec(tmp_path, vllm, concurrency=8, seconds=6)
    with loadgen(tmp_path, spec, "real") as run:
        run.start(workers=1)
        assert run.wait(timeout=300) == 0
        df = run.records()
    ok = df[df["outcome"] == "ok"]
    gaps = ok["itl_s"].map(lambda b: itl_gaps(b).size)  # one gap between consecutive non-empty content events
    assert (ok["output_tokens"] == OUTPUT_TOKENS).all()
    assert (gaps < OUTPUT_TOKENS - 1).any(), "every token arrived in its own chunk: nothing was packed or empty"


def test_a_local_run_starts_the_engine_and_reports_its_metrics_per_stage(vllm: Vllm, tmp_path: Path) -> None:
    """`fmbench-k8s run --engine-python vllm=...` serves an `engine: vllm` variant with a vLLM it
    starts itself, from the operator's own command line (plus the variant's CPU args and env),
    beside an endpoint variant (the session's vLLM). Both engines' /metrics are scraped - the
    started one's and the endpoint's (derived from its URL) - so the report has each engine's
    queue, KV cache and timers for each stage, and exact output lengths where the spec asked."""
    doc = yaml.safe_load(_spec(tmp_path, vllm, concurrency=8, seconds=6).read_text())
    doc["spec"]["model"] = {"name": vllm.model}
    doc["spec"]["variants"] = [
        _started("started"),
        *doc["spec"]["variants"],
    ]
    doc["spec"]["load"].update({"mode": "sweep", "concurrency": {"levels": [2, 8]}})
    # prompts opening with one of two shared prefixes: vLLM's prefix cache serves them
    doc["spec"]["workload"]["sharedPrefix"] = {"prefixes": 2, "tokens": 96}
    run = _run_starting_vllm(doc, vllm, tmp_path)
    report = json.loads((run / "report.json").read_text())
    stages = report["serverMetrics"]["stages"]
    assert report["serverMetrics"]["collected"] and len(stages) == 4, report["serverMetrics"]
    for stage in stages:
        m = stage["metrics"]
        for key in ("running", "waiting", "kvCacheUsage", "queueTimeMean", "generationTokens"):
            assert key in m, (stage["variant"], key, stage["absent"])
        assert m["kvCacheUsage"]["series"].endswith("kv_cache_usage_perc")  # vLLM 0.32's name, not the old one
        # the prefixes (96 words, a few hundred tokens in all with the question's) hit the cache
        hits = m["prefixCacheHitRate"]
        assert 0.3 < hits["value"] < 1 and hits["series"] in HIT_RATE_SERIES
    for variant in ("started", "real"):
        low, high = (s["metrics"] for s in stages if s["variant"] == variant)
        assert high["running"]["max"] == MAX_NUM_SEQS  # 8 streams fill the 4 slots
        assert high["waiting"]["max"] > 0
        assert low["waiting"]["max"] == 0
    by = {v["name"]: v for v in report["variants"]}
    assert by["started"]["model"] == vllm.model and by["real"]["model"] == SERVED_NAME
    assert by["started"]["servedBy"] == f"vllm from {vllm.python} on this machine"  # not the cluster's image
    assert by["real"]["servedBy"].startswith("openai-chat endpoint http://127.0.0.1:")
    # Every model-server dashboard panel a run can feed shows data from the real engines' series.
    last = json.loads((run / "stages" / "real.json").read_text())[-1]
    replay, url = start_prometheus(PROMETHEUS, tmp_path / "replay", [], data_dir=run / "prometheus" / "data")
    try:
        panels = [(t, q) for d, t, q in _local_queries()[0] if d == "model-server"]
        empty = [(t, q) for t, q in panels if not _query(url, q, last["steady_end"] - 1)]
    finally:
        replay.stop()
    assert len(panels) >= 5 and not empty, empty
    # the started engine honours ignore_eos as its engine facts say; the endpoint because the spec asks
    assert all(s["meanOutputTokens"] == OUTPUT_TOKENS for v in by.values() for s in v["stages"])


def test_the_generated_vllm_arguments_are_what_vllm_accepts(vllm: Vllm) -> None:
    """contract/engines.py's command lines, parsed by the real vLLM's own argument parser."""
    variants = [
        server_args("vllm", "org/model", 8000),
        server_args("vllm", "org/model", 8000, tensor_parallel=4, revision="abc123"),
        server_args("neuronx-vllm", "org/model", 8000, tensor_parallel=24),
    ]
    code = (
        "import json, sys\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    a = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)\n"
        "    out.append([a.model, a.port, a.tensor_parallel_size, a.revision])\n"
        "print(json.dumps(out))\n"
    )
    # cwd: not the checkout, whose operator/ folder would shadow the standard library's operator
    env = {"VLLM_TARGET_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([vllm.python, "-c", code, json.dumps(variants)], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=vllm.log.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == [["org/model", 8000, 1, None], ["org/model", 8000, 4, "abc123"], ["org/model", 8000, 24, None]]


def test_a_real_engines_answers_are_kept_scored_and_judged(vllm: Vllm, tmp_path: Path) -> None:
    """spec.evaluation against vLLM (docs/accuracy.md): the records keep the text vLLM streamed,
    the same a plain request gets, every ok answer is scored, and vLLM itself, as the judge,
    gets the filled judge prompt. The tiny random model says neither CORRECT nor INCORRECT, so
    its replies are no votes, and the report says so."""
    doc = yaml.safe_load(_spec(tmp_path, vllm, concurrency=1, seconds=4).read_text())
    doc["spec"]["workload"]["dataset"] = {
        "uri": str(REPO / "examples" / "datasets" / "capitals-qa.jsonl"), "promptField": "question",
        "referenceField": "answer",
    }  # fmt: skip
    judge = {"name": "vllm", "url": f"{vllm.url}/v1", "model": SERVED_NAME}
    doc["spec"]["evaluation"] = {"metrics": ["exactMatch", "f1", "rougeL", "judge"],
                                 "judging": {"judges": [judge], "maxAnswers": 5}}  # fmt: skip
    spec = tmp_path / "eval.yaml"
    spec.write_text(yaml.safe_dump(doc))
    done = subprocess.run([CLI, "run", str(spec), "--output", str(tmp_path / "out"), "--no-plots"],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (run,) = (tmp_path / "out" / "local" / "lgtest").iterdir()
    columns = ["ok", "prompt", "answer", "reference"]
    shards = sorted((run / "records" / "real").glob("*.parquet"))
    rows = [r for p in shards for r in pq.read_table(p, columns=columns).to_pylist() if r["ok"]]
    assert rows and all(r["answer"] and r["reference"] for r in rows)
    # one request alone (concurrency 1, temperature 0): the kept answer is what vLLM says to a plain request
    first = rows[0]
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": first["prompt"]}],
            "max_tokens": OUTPUT_TOKENS, "temperature": 0.0, "ignore_eos": True}  # fmt: skip
    url = urllib.parse.urlsplit(vllm.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    direct = json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]
    assert first["answer"] == direct
    report = json.loads((run / "report.json").read_text())
    scores = {s["metric"]: s for s in report["variants"][0]["accuracy"]["scores"]}
    assert scores["f1"]["n"] == scores["exactMatch"]["n"] == len(rows) >= 10
    assert scores["judge"]["n"] == 0  # random words are no verdict
    note = next(n for n in report["notes"] if n.startswith("judges: 1 (vllm)"))
    assert "; 5 answers got no verdict" in note and "failed" not in note, note


def test_a_vision_model_on_vllm_gets_each_prompts_images_and_the_report_splits_them_by_size(
    vllm: Vllm, tmp_path: Path
) -> None:
    """workload.images against vLLM serving a tiny random Qwen2-VL (tests/engines/tiny_model.py),
    started by `fmbench-k8s run` from the operator's command line: every request carries its PNG
    as an OpenAI image part, vLLM counts the image's tokens in usage (Qwen2-VL: one per 28-pixel
    square, plus two), the report splits each stage by image size, and no image is served from
    vLLM's multimodal cache: each request's image is its own."""
    doc = yaml.safe_load(_spec(tmp_path, vllm, concurrency=2, seconds=8).read_text())
    doc["spec"]["model"] = {"name": vllm.vlm}
    doc["spec"]["variants"] = [_started("vlm")]
    sizes = {"small": (224, 224), "large": (448, 336)}  # 8·8 and 16·12 squares of 28 px
    doc["spec"]["workload"]["promptTokens"] = {"mean": 20}
    doc["spec"]["workload"]["images"] = {
        "sizes": [{"name": n, "width": w, "height": h, "share": 0.5} for n, (w, h) in sizes.items()]
    }
    doc["spec"]["slo"] = {"latency": {"metric": "ttft", "percentile": 90, "maxSeconds": 5}}
    run = _run_starting_vllm(doc, vllm, tmp_path)
    columns = ["ok", "error", "prompt_tokens", "images", "image_size", "image_pixels", "output_tokens", "t_first_token"]
    shards = sorted((run / "records" / "vlm").glob("*.parquet"))
    rows = [r for p in shards for r in pq.read_table(p, columns=columns).to_pylist()]
    ok = [r for r in rows if r["ok"]]
    assert len(ok) >= 20 and len(ok) == len(rows), {r["error"] for r in rows}
    assert all(r["images"] == 1 and r["output_tokens"] == OUTPUT_TOKENS for r in ok)
    tokens = {n: statistics.median(r["prompt_tokens"] for r in ok if r["image_size"] == n) for n in sizes}
    # the text is the same length for both (20 words, tokenized alike on average): the difference is the images'
    assert abs((tokens["large"] - tokens["small"]) - (16 * 12 - 8 * 8)) <= 4, tokens
    assert all(r["image_pixels"] == sizes[r["image_size"]][0] * sizes[r["image_size"]][1] for r in ok)
    report = json.loads((run / "report.json").read_text())
    (stage,) = report["variants"][0]["stages"]
    split = {g["name"]: g for g in stage["imageSizes"]}
    assert set(split) == set(sizes) and sum(g["requests"] for g in split.values()) == stage["steady"]["requests"]
    assert split["large"]["meanPromptTokens"] > split["small"]["meanPromptTokens"] + 100
    assert split["large"]["meanImageBytes"] > split["small"]["meanImageBytes"] * 2
    assert "## By image size" in (run / "report.md").read_text()
    # vLLM's multimodal cache looked each image up and never found it: no request got another's encoding
    last = json.loads((run / "stages" / "vlm.json").read_text())[-1]
    replay, url = start_prometheus(PROMETHEUS, tmp_path / "replay", [], data_dir=run / "prometheus" / "data")
    try:
        queries, hits = (_query(url, f"max(vllm:{name}_total)", last["end"]) for name in ("mm_cache_queries",
                                                                                        "mm_cache_hits"))  # fmt: skip
        scraped = _query(url, "max(timestamp(vllm:mm_cache_queries_total))", last["end"])
    finally:
        replay.stop()
    # Every request answered by the last scrape had its image looked up (the rest came after it).
    answered = sum(r["t_first_token"] <= float(scraped[0]["value"][1]) for r in ok)
    assert len(ok) >= float(queries[0]["value"][1]) >= answered >= len(ok) / 2, (queries, answered, len(ok))
    assert float(hits[0]["value"][1]) == 0, hits
