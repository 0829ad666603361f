"""How much load one load generator worker process can offer while its timestamps stay exact.

One worker (``python -m fmbench_k8s.loadgen worker``, with its master) sends an open-loop
Poisson stream of chat requests to the simulator. Every request streams ``--tokens`` events
``--decode-s`` apart, so about ``streams`` requests are in flight and the worker receives
``streams / decode_s`` SSE events per second. The simulator's TTFT is exactly ``--prefill-s``
(jitter 0, prompt cost 0), so ``ttft - prefill`` is the timing error the client adds (plus any
lag of the simulator itself, which shares this machine's cores). A level passes when the TTFT
error p99 is <= 2 ms.

The same schedule is also offered by a plain asyncio/aiohttp client (uvloop) for comparison, and
GuideLLM (0.8, installed in a separate virtualenv /tmp/guidellm-venv) offers it too.

    .venv/bin/python benchmarks/bench_loadgen.py                 # defaults: streams 250..2000
    .venv/bin/python benchmarks/bench_loadgen.py --streams 500,1000 --clients loadgen

Results are printed as a Markdown table and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from fmbench_k8s.local.processes import free_port

PY = sys.executable
ERROR_BUDGET_S = 0.002


# -- processes --------------------------------------------------------------------------------


def start_simulator(prefill_s: float, decode_s: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [PY, "-m", "fmbench_k8s.simulator", "--port", "0", "--max-num-seqs", "100000", "--prefill-base-s",
           str(prefill_s), "--prefill-s-per-token", "0", "--decode-base-s", str(decode_s),
           "--batch-slowdown", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/tmp")
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            if line.startswith("simulator listening on "):
                return proc, line.split()[-1]
    proc.kill()
    raise RuntimeError("simulator did not start")


RAW_SERVER_DOC = """A minimal OpenAI-chat SSE server (uvloop, raw protocol, pre-encoded events, deadline timers):
a reference whose own overhead is a few microseconds per event, so the client's error is what
remains. Same timing as the simulator with jitter 0: TTFT = prefill, then one event per decode."""


def raw_server_main(port: int, prefill_s: float, decode_s: float) -> None:
    import re

    import uvloop

    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    event = chunk(b'data: {"id":"raw","object":"chat.completion.chunk","created":0,"model":"raw","choices":'
                  b'[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n')  # fmt: skip
    length_re, tokens_re = re.compile(rb"content-length: *(\d+)", re.I), re.compile(rb'"max_tokens": *(\d+)')

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (i := self.buf.find(b"\r\n\r\n")) >= 0:
                m = length_re.search(self.buf[:i])
                n = int(m.group(1)) if m else 0
                if len(self.buf) < i + 4 + n:
                    return
                body, self.buf = self.buf[i + 4 : i + 4 + n], self.buf[i + 4 + n :]
                tm = tokens_re.search(body)
                asyncio.get_running_loop().create_task(self.stream(int(tm.group(1)) if tm else 16))

        async def stream(self, n: int) -> None:
            write = self.t.write  # type: ignore[attr-defined]
            write(head)
            deadline = time.perf_counter() + prefill_s
            for _ in range(n):
                await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
                write(event)
                deadline += decode_s
            usage = b'data: {"choices":[],"usage":{"prompt_tokens":16,"completion_tokens":%d}}\n\n' % n
            write(chunk(usage) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", port, backlog=4096)
        print(f"raw server listening on http://127.0.0.1:{port}", flush=True)
        await server.serve_forever()

    uvloop.run(serve())


def start_raw_server(prefill_s: float, decode_s: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [PY, __file__, "--child-server", str(port), "--prefill-s", str(prefill_s), "--decode-s", str(decode_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd="/tmp")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError("raw server did not start")
    return proc, f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return math.nan


def sample_cpu(pid: int, until: subprocess.Popen[bytes], timeout: float) -> list[tuple[float, float, float]]:
    """(time, CPU seconds, of which in the kernel) of process ``pid`` every 50 ms until ``until``
    exits: the CPU of the steady window alone, without the worker's start (imports) and its
    records' last flush."""
    samples: list[tuple[float, float, float]] = []
    proc, deadline = psutil.Process(pid), time.monotonic() + timeout
    while until.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            samples.append((time.time(), float(t.user + t.system), float(t.system)))
        time.sleep(0.05)
    if until.poll() is None:
        until.kill()
        raise RuntimeError("loadgen master did not finish in time")
    return samples


def cpu_between(samples: list[tuple[float, float, float]], t0: float, t1: float) -> tuple[float, float]:
    """CPU seconds spent between ``t0`` and ``t1``, and those in the kernel, interpolated between
    the samples."""
    if len(samples) < 2 or t0 < samples[0][0] or t1 > samples[-1][0]:
        return math.nan, math.nan
    ts, cpu, sys_ = (np.array(column) for column in zip(*samples, strict=True))

    def spent(series: np.ndarray) -> float:
        return float(np.interp(t1, ts, series) - np.interp(t0, ts, series))

    return spent(cpu), spent(sys_)


# -- metrics shared by every client -----------------------------------------------------------


def summarize(reqs: list[dict[str, Any]], window: tuple[float, float], prefill_s: float, offered: float,
              cpu: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    """``reqs``: t_scheduled, t_sent, ttft (s or None), events (absolute times), ok; ``cpu``: the
    client's CPU seconds in the window, and those of them in the kernel."""
    cpu_s, sys_s = cpu
    w0, w1 = window
    span = w1 - w0
    in_win = [r for r in reqs if w0 <= r["t_scheduled"] < w1]
    ok = [r for r in in_win if r["ok"] and r["ttft"] is not None]
    err = np.array([r["ttft"] - prefill_s for r in ok]) if ok else np.array([math.nan])
    events = sum(int(np.sum((np.asarray(r["events"]) >= w0) & (np.asarray(r["events"]) < w1))) for r in reqs)
    inflight = sum(max(0.0, min(r["t_end"], w1) - max(r["t_sent"], w0)) for r in reqs if r["t_sent"]) / span
    lag = np.array([r["t_sent"] - r["t_scheduled"] for r in in_win if r["t_sent"]] or [math.nan])
    return {
        "offered_rps": offered,
        "requests": len(in_win),
        "failed": len(in_win) - len(ok),
        "streams": round(inflight, 1),
        "events_per_s": round(events / span),
        "ttft_err_p50_ms": round(float(np.nanpercentile(err, 50)) * 1000, 2),
        "ttft_err_p99_ms": round(float(np.nanpercentile(err, 99)) * 1000, 2),
        "ttft_err_max_ms": round(float(np.nanmax(err)) * 1000, 2),
        "send_lag_p99_ms": round(float(np.nanpercentile(lag, 99)) * 1000, 2),
        "client_cpu_percent": round(cpu_s / span * 100, 1) if not math.isnan(cpu_s) else None,
        "cpu_us_per_event": round(cpu_s / events * 1e6, 1) if events and not math.isnan(cpu_s) else None,
        "kernel_us_per_event": round(sys_s / events * 1e6, 1) if events and not math.isnan(sys_s) else None,
        "passes": bool(len(ok) == len(in_win) and float(np.nanpercentile(err, 99)) <= ERROR_BUDGET_S),
    }


# -- the load generator (real master + one worker) --------------------------------------------


def run_loadgen(url: str, rate: float, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = {
        "apiVersion": "fmbench.io/v1alpha1", "kind": "Benchmark", "metadata": {"name": "bench"},
        "spec": {
            "variants": [{"name": "sim", "endpoint": {"api": "openai-chat", "url": url + "/v1"}}],
            "workload": {"requestsPerMinute": rate * 60, "promptTokens": {"mean": 16},
                         "outputTokens": {"mean": args.tokens}, "seed": 1},
            "slo": {"latency": {"metric": "ttft", "maxSeconds": 1}, "maxErrorRate": 1},
            "load": {"mode": "fixed", "arrival": "poisson", "rate": {"levels": [rate]}, "workers": 1,
                     "warmup": f"{args.warmup_s}s", "stageDuration": f"{args.stage_s}s", "drain": "60s",
                     "minRequestsPerStage": 1},
        },
    }  # fmt: skip
    spec_path = workdir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = workdir / "run"
    port = free_port()
    common = ["--spec", str(spec_path), "--variant", "sim", "--output", str(out), "--run-id", "bench"]
    logs = [open(workdir / f"{n}.log", "w") for n in ("master", "worker")]  # noqa: SIM115
    master = subprocess.Popen([PY, "-m", "fmbench_k8s.loadgen", "master", *common, "--master-port", str(port)],
                              stdout=logs[0], stderr=subprocess.STDOUT, cwd=workdir)  # fmt: skip
    worker = subprocess.Popen([PY, "-m", "fmbench_k8s.loadgen", "worker", *common, "--master-host", "127.0.0.1",
                               "--master-port", str(port), "--worker-id", "w0", "--max-inflight", "100000"],
                              stdout=logs[1], stderr=subprocess.STDOUT, cwd=workdir,
                              env={**os.environ, **args.worker_env})  # fmt: skip
    samples = sample_cpu(worker.pid, master, args.warmup_s + args.stage_s + 180)
    code = master.wait()
    worker.wait(timeout=60)
    for f in logs:
        f.close()
    if code != 0:
        raise RuntimeError(f"loadgen master exited {code}; see {workdir}")
    import pandas as pd
    import pyarrow.parquet as pq

    from fmbench_k8s.contract.records import itl_gaps

    df = pd.concat([pq.read_table(p).to_pandas() for p in sorted((out / "records" / "sim").glob("*.parquet"))])
    stage = json.loads((out / "stages" / "sim.json").read_text())[0]
    reqs = []
    for r in df.itertuples():
        events = []
        if r.t_first_token == r.t_first_token:  # not NaN
            events = list(r.t_first_token + np.concatenate(([0.0], np.cumsum(itl_gaps(r.itl_s).astype(float)))))
        t_end = r.t_end if r.t_end == r.t_end else r.t_sent
        ttft = r.ttft_s if r.ttft_s == r.ttft_s else None
        reqs.append({"t_scheduled": r.t_scheduled, "t_sent": r.t_sent, "t_end": t_end, "ttft": ttft, "events": events,
                     "ok": r.ok})  # fmt: skip
    window = (stage["steady_start"], stage["steady_end"])
    res = summarize(reqs, window, args.prefill_s, rate, cpu_between(samples, *window))
    res["client_bound_flag"] = stage["client_bound"]
    return res


# -- a plain asyncio + aiohttp client for comparison ------------------------------------------


async def _aiohttp_run(url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(1)
    body = {"messages": [{"role": "user", "content": " ".join(["word"] * 16)}], "max_tokens": args.tokens,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    reqs: list[dict[str, Any]] = []
    t0 = time.time() + 0.5
    w0, w1 = t0 + args.warmup_s, t0 + args.warmup_s + args.stage_s

    async def one(session: aiohttp.ClientSession, t_sched: float) -> None:
        r: dict[str, Any] = {"t_scheduled": t_sched, "t_sent": time.time(), "ttft": None, "events": [], "ok": False}
        reqs.append(r)
        try:
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {") and b'"content"' in line:
                        now = time.time()
                        if r["ttft"] is None:
                            r["ttft"] = now - r["t_sent"]
                        r["events"].append(now)
            r["ok"] = True
        except Exception:
            pass
        r["t_end"] = time.time()

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks, t = [], t0
        proc = psutil.Process()
        cpu_start = None
        while t < w1:
            if cpu_start is None and t >= w0:
                cpu_start = proc.cpu_times()
            delay = t - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, t)))
            t += rng.expovariate(rate)
        end = proc.cpu_times()
        start = cpu_start or end._replace(user=0.0, system=0.0)
        used = (end.user + end.system - start.user - start.system, end.system - start.system)
        await asyncio.gather(*tasks)
    return summarize(reqs, (w0, w1), args.prefill_s, rate, used)


def run_aiohttp(url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [PY, __file__, "--child-aiohttp", url, "--rate", str(rate), "--tokens", str(args.tokens), "--prefill-s",
           str(args.prefill_s), "--warmup-s", str(args.warmup_s), "--stage-s", str(args.stage_s)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=args.warmup_s + args.stage_s + 180)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- GuideLLM, from its own virtualenv ---------------------------------------------------------


GUIDELLM = Path("/tmp/guidellm-venv/bin/guidellm")


def run_guidellm(url: str, rate: float, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """GuideLLM 0.8 with a JSONL dataset: its synthetic data needs a Hugging Face tokenizer
    download, which this offline machine cannot do; a file of prompts needs none."""
    data = workdir / "prompts.jsonl"
    prompt = " ".join(["word"] * 16)
    data.write_text("".join(json.dumps({"prompt": prompt, "output_tokens_count": args.tokens}) + "\n"
                            for _ in range(int(rate * (args.warmup_s + args.stage_s) * 2) + 100)))  # fmt: skip
    cmd = [str(GUIDELLM), "run", "--backend", f"kind=openai_http,target={url}", "--profile",
           f"kind=poisson,rate={rate}", "--constraint", f"kind=max_duration,seconds={args.warmup_s + args.stage_s}",
           "--data", f"kind=json_file,path={data}", "--disable-progress", "--disable-console"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=True,
                   timeout=args.warmup_s + args.stage_s + 300, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    doc = json.loads((workdir / "benchmarks.json").read_text())["benchmarks"][0]
    done = doc["requests"]["successful"]
    start = min(float(r["request_start_time"]) for r in done)
    w0, w1 = start + args.warmup_s, start + args.warmup_s + args.stage_s
    reqs = []
    for r in done:
        t_sent = float(r["request_start_time"])
        ttft = float(r["time_to_first_token_ms"]) / 1000
        itl = float(r["inter_token_latency_ms"]) / 1000
        first = t_sent + ttft
        reqs.append({"t_scheduled": t_sent - float(r["request_dispatch_delay"]), "t_sent": t_sent, "ttft": ttft,
                     "t_end": float(r["request_end_time"]), "ok": True,
                     "events": [first + k * itl for k in range(int(float(r["output_tokens"])))]})  # fmt: skip
    share = args.stage_s / (args.warmup_s + args.stage_s)
    sys_s = (after.ru_stime - before.ru_stime) * share
    res = summarize(reqs, (w0, w1), args.prefill_s, rate, ((after.ru_utime - before.ru_utime) * share + sys_s, sys_s))
    res["note"] = "events reconstructed from GuideLLM's per-request mean ITL"
    return res


# -- main ---------------------------------------------------------------------------------------


def headline(rows: list[dict[str, Any]]) -> None:
    """CPU per event of loadgen over aiohttp's at each level both ran (#21's target: ≤ 0.6): the
    median of the ratios of the runs paired by repetition, with their range, which is this
    machine's noise between runs (±10% here)."""
    by = {(r["client"], r["target_streams"], r.get("repeat", 0)): r for r in rows}
    levels: dict[int, list[tuple[float, dict[str, Any], dict[str, Any]]]] = {}
    for (client, streams, rep), r in sorted(by.items()):
        other = by.get(("aiohttp", streams, rep))
        if client == "loadgen" and other and r["cpu_us_per_event"] and other["cpu_us_per_event"]:
            levels.setdefault(streams, []).append((r["cpu_us_per_event"] / other["cpu_us_per_event"], r, other))
    if not levels:
        return
    from headline import record  # benchmarks/ is the script's own folder, first on sys.path

    def median(values: list[float]) -> float:
        return float(np.median(values))

    medians, parts = [], []
    for streams, runs in sorted(levels.items()):
        ratio = median([x for x, _, _ in runs])
        medians.append(ratio)
        spread = f"runs {min(x for x, _, _ in runs):.2f}–{max(x for x, _, _ in runs):.2f}; " if len(runs) > 1 else ""
        lg, aio = (
            median([r["cpu_us_per_event"] for _, r, _ in runs]),
            median([o["cpu_us_per_event"] for _, _, o in runs]),
        )
        lg_err = median([r["ttft_err_p99_ms"] for _, r, _ in runs])
        aio_err = median([o["ttft_err_p99_ms"] for _, _, o in runs])
        parts.append(f"{ratio:.2f} at {streams} streams ({spread}{lg:g} vs {aio:g} µs; "
                     f"p99 error {lg_err:g} vs {aio_err:g} ms)")  # fmt: skip
    passing = {c: max((r["events_per_s"] for r in rows if r["client"] == c and r["passes"]), default=0)
               for c in ("loadgen", "aiohttp")}  # fmt: skip
    if passing["aiohttp"]:
        per_core = f"events/s at p99 ≤ 2 ms: {passing['loadgen'] / passing['aiohttp']:.2f}× aiohttp's"
    else:
        per_core = f"events/s at p99 ≤ 2 ms: loadgen {passing['loadgen']:,}, aiohttp at no level"
    paired = max(len(r) for r in levels.values())
    text = (f"CPU per event, loadgen / aiohttp (median of {paired} paired runs): " + "; ".join(parts)
            + f" (target ≤ 0.6). {per_core}")  # fmt: skip
    record("loadgen", text, all(ratio <= 0.6 for ratio in medians))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="250,500,1000,1500,2000", help="target concurrent streams per level")
    p.add_argument(
        "--clients",
        default="loadgen,aiohttp,guidellm",
        help="loadgen, aiohttp and guidellm (from /tmp/guidellm-venv; skipped when absent)",
    )
    p.add_argument("--tokens", type=int, default=100, help="events per request")
    p.add_argument("--decode-s", type=float, default=0.05, help="gap between a stream's events")
    p.add_argument("--prefill-s", type=float, default=0.02, help="the simulator's (exact) TTFT")
    p.add_argument("--warmup-s", type=float, default=6.0)
    p.add_argument("--stage-s", type=float, default=10.0)
    p.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "bench_loadgen.json")
    p.add_argument(
        "--server",
        choices=["simulator", "raw"],
        default="simulator",
        help="simulator, or a minimal reference server (client error only; see raw_server_main)",
    )
    p.add_argument("--child-aiohttp", help=argparse.SUPPRESS)
    p.add_argument("--child-server", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--keep", type=Path, help="keep each level's run directory under this path")
    p.add_argument("--repeat", type=int, default=1, help="runs of each client per level (the headline: their median)")
    args = p.parse_args()
    args.worker_env = {}
    if os.environ.get("BENCH_GEVENT_MONITOR"):  # e.g. 0.005: report hub blocks > 5 ms in worker.log (--keep)
        args.worker_env = {"GEVENT_MONITOR_THREAD_ENABLE": "true",
                           "GEVENT_MAX_BLOCKING_TIME": os.environ["BENCH_GEVENT_MONITOR"]}  # fmt: skip
    if args.child_server:
        raw_server_main(args.child_server, args.prefill_s, args.decode_s)
        return 0
    if args.child_aiohttp:
        import uvloop

        print(json.dumps(uvloop.run(_aiohttp_run(args.child_aiohttp, args.rate, args))))
        return 0
    request_s = args.prefill_s + (args.tokens - 1) * args.decode_s
    clients = [c for c in args.clients.split(",") if c != "guidellm" or GUIDELLM.exists()]
    if len(clients) < len(args.clients.split(",")):
        print(
            f"guidellm skipped: {GUIDELLM} not found (python -m venv /tmp/guidellm-venv && "
            "/tmp/guidellm-venv/bin/pip install guidellm)",
            flush=True,
        )
    start = start_raw_server if args.server == "raw" else start_simulator
    sim, url = start(args.prefill_s, args.decode_s)
    rows = []
    try:
        # level by level, the clients back to back in each repetition: the machine's drift within
        # a pair is then seconds, not minutes (the CPU ratio is read per pair)
        levels = [int(s) for s in args.streams.split(",")]
        for streams, repeat, client in itertools.product(levels, range(args.repeat), clients):
            rate = streams / request_s
            sim_cpu0, t0 = cpu_seconds(sim.pid), time.time()
            with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
                work = Path(tmp)
                if args.keep:
                    work = args.keep / f"{client}-{streams}-{repeat}"
                    work.mkdir(parents=True, exist_ok=True)
                if client == "loadgen":
                    res = run_loadgen(url, rate, args, work)
                elif client == "guidellm":
                    res = run_guidellm(url, rate, args, work)
                else:
                    res = run_aiohttp(url, rate, args)
            res["sim_cpu_percent"] = round((cpu_seconds(sim.pid) - sim_cpu0) / (time.time() - t0) * 100, 1)
            res = {"client": client, "server": args.server, "target_streams": streams, "repeat": repeat, **res}
            rows.append(res)
            print(json.dumps(res), flush=True)
    finally:
        sim.terminate()
        sim.wait()
    cols = ["client", "server", "target_streams", "streams", "events_per_s", "ttft_err_p50_ms", "ttft_err_p99_ms",
            "send_lag_p99_ms", "client_cpu_percent", "cpu_us_per_event", "kernel_us_per_event", "sim_cpu_percent",
            "failed", "passes"]  # fmt: skip
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    for client in {r["client"] for r in rows}:
        ok = [r for r in rows if r["client"] == client and r["passes"]]
        best = max(ok, key=lambda r: r["events_per_s"]) if ok else None
        shown = f"{best['events_per_s']} events/s, {best['streams']} streams" if best else "none"
        print(f"{client}: highest passing level: {shown}")
    headline(rows)
    args.json.write_text(
        json.dumps(
            {
                "rows": rows,
                "cpus": os.cpu_count(),
                "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
