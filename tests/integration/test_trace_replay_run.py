"""A trace replay end to end on the simulator (load.arrival: trace): the requests the workers sent
are the trace's, arrival by arrival: each scheduled at the trace's time-scaled offset, each with its
row's prompt and output lengths."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fmbench_k8s.api.spec import Trace
from fmbench_k8s.contract.traces import parse_trace
from tests.corpus import REPO
from tests.integration.localrun import run_benchmark

pytestmark = pytest.mark.integration
RATE = 8.0


def test_the_replay_sends_the_traces_requests_at_its_scaled_times(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "examples" / "trace.yaml").read_text())
    trace = REPO / "examples" / "traces" / "mooncake-sample.jsonl"
    doc["spec"]["workload"]["trace"] = {"uri": str(trace), "format": "mooncake"}
    doc["spec"]["load"].update({"mode": "fixed", "rate": {"levels": [RATE]}, "stageDuration": "6s", "drain": "5s",
                                "minRequestsPerStage": 1})  # fmt: skip
    _, run = run_benchmark(doc, tmp_path)
    (stage,) = json.loads((run / "stages" / "g6e-sim.json").read_text())
    records = pq.read_table(run / "records").to_pandas().sort_values("t_scheduled")
    replay = parse_trace(trace.read_bytes(), Trace(uri=str(trace), format="mooncake"))
    # every arrival due before the window closed, at the trace's offset scaled to RATE
    due = list(itertools.takewhile(lambda t: stage["start"] + t < stage["steady_end"], replay.offsets_at(RATE)))
    assert len(records) == len(due)
    got = (records["t_scheduled"] - stage["start"]).to_numpy()
    assert got == pytest.approx(due, abs=1e-6)
    # the trace's bursts survive the scaling: gaps as uneven as the trace's
    gaps = got[1:] - got[:-1]
    assert gaps.std() / gaps.mean() > 1.2
    # each request carried its row's lengths: the simulator counted the prompt (plus its chat
    # template's few tokens) and stopped at the row's output length
    assert (records["outcome"] == "ok").mean() >= 0.95
    # arrivals at the same instant (the trace has some) share a time: compare each instant's set
    instants = np.unique(np.asarray(due))
    expected: dict[int, list[tuple[int, int]]] = {}
    for i, t in enumerate(due):
        prompt, out = replay.lengths(i)
        expected.setdefault(int(np.abs(instants - t).argmin()), []).append((out, prompt))
    sent: dict[int, list[tuple[int, int]]] = {}
    for t, ok_, prompt, out in zip(got, records["outcome"] == "ok", records["prompt_tokens"],
                                   records["output_tokens"], strict=True):  # fmt: skip
        k = int(np.abs(instants - t).argmin())
        assert abs(instants[k] - t) < 1e-5
        if ok_:
            sent.setdefault(k, []).append((int(out), int(prompt)))
    for k, pairs in sent.items():
        want = sorted(expected[k])
        assert len(pairs) <= len(want)
        for (out, prompt), (want_out, want_prompt) in zip(sorted(pairs), want, strict=False):
            assert out == want_out and 0 <= prompt - want_prompt <= 8, (instants[k], pairs, want)
