"""A corpus of damaged run directories: each is refused (an error naming the file, column or field)
or flagged (a note, an error reason), and none yields a recommendation the undamaged run would
not give. The cheap variant ``cheap`` is too slow for the SLO; every damage below tries to make
it look fast, the way a corrupted or hostile input would."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fmbench_k8s.analysis.pricing import parse_price_table
from fmbench_k8s.analysis.run import analyze_run, load_report
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec, Pricing
from fmbench_k8s.contract.records import itl_gaps
from fmbench_k8s.contract.summary import Summary
from fmbench_k8s.storage import LocalStorage

SPEC = BenchmarkSpec.model_validate({
    "variants": [
        {"name": "cheap", "instanceType": "g5.2xlarge", "engine": "simulator", "pricePerHour": 0.5},
        {"name": "good", "instanceType": "g6e.2xlarge", "engine": "simulator", "pricePerHour": 2.0},
    ],
    "workload": {"requestsPerMinute": 600, "promptTokens": {"mean": 256}, "outputTokens": {"mean": 32}},
    "slo": {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 1.5}, "maxErrorRate": 0.05},
    "load": {"minRequestsPerStage": 40},
})  # fmt: skip

VARIANTS = [
    SyntheticVariant("cheap", levels=(1, 2), ttft_s=1.0, itl_s=0.1, output_tokens=32, requests_per_stage=200),
    SyntheticVariant("good", levels=(1, 2, 4), ttft_s=0.1, itl_s=0.01, output_tokens=32, requests_per_stage=200),
]


def _run(root: Path) -> LocalStorage:
    table, stages = synthesize_table(VARIANTS, stage_s=30, warmup_s=5, drain_s=30, seed=11)
    storage = LocalStorage(root)
    write_run(storage, table, stages)
    return storage


def _analyze(storage: LocalStorage) -> tuple[Summary, dict[str, Any]]:
    summary = analyze_run(SPEC, storage, benchmark="damaged", run_id="r", plots=False)
    return summary, load_report(storage)


def _shards(root: Path, variant: str) -> list[Path]:
    return sorted((root / "records" / variant).glob("*.parquet"))


def _edit(root: Path, variant: str, change: Callable[[pa.Table], pa.Table]) -> None:
    for path in _shards(root, variant):
        pq.write_table(change(pq.read_table(path)), path)


def _set_ok_share(damage: dict[str, float], share: float) -> Callable[[pa.Table], pa.Table]:
    """Each column of ``damage`` set to its value on the first ``share`` of each shard's ok rows;
    every ok row is made fast first (TTFT 0.1 s, E2E 0.2 s, no timestamps to recompute them
    from), so only the damaged rows stand between the slow variant and a recommendation."""

    def change(table: pa.Table) -> pa.Table:
        rows = np.flatnonzero(np.asarray(pc.equal(table["outcome"], "ok").to_numpy(zero_copy_only=False)))
        damaged = rows[: math.ceil(share * rows.size)]
        fast = {
            "ttft_s": 0.1,
            "e2e_s": 0.2,
            "t_first_token": math.nan,
            "t_first_answer": math.nan,
            "t_last_token": math.nan,
        }
        for column, value in {**fast, **damage}.items():
            values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
            if column in fast:
                values[rows] = fast[column]
            values[damaged] = value
            typed = pa.array(values, type=table.schema.field(column).type, from_pandas=True)
            table = table.set_column(table.schema.get_field_index(column), column, typed)
        return table

    return change


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, doc = _analyze(_run(tmp_path_factory.mktemp("baseline")))
    by = {v["name"]: v for v in doc["variants"]}
    assert not by["cheap"]["meetsSlo"] and by["good"]["meetsSlo"]
    assert doc["recommendation"]["variant"] == "good"
    return doc


def _no_new_answer(doc: dict[str, Any], baseline: dict[str, Any]) -> None:
    rec = doc["recommendation"]
    assert rec is None or rec["variant"] == baseline["recommendation"]["variant"]
    cheap = next(v for v in doc["variants"] if v["name"] == "cheap")
    assert not cheap["meetsSlo"] and cheap["instancesNeeded"] is None


@pytest.mark.parametrize(
    ("damage", "share", "reason"),
    [
        ({"e2e_s": math.inf}, 0.2, "invalid_record:e2e"),
        ({"e2e_s": math.nan}, 0.2, "invalid_record:e2e"),  # and no t_last_token to compute it from
        ({"e2e_s": -1.0}, 1.0, "invalid_record:e2e"),
        ({"ttft_s": math.inf}, 0.2, "invalid_record:ttft"),
        ({"ttft_s": 5.0}, 0.2, "invalid_record:ttft_after_e2e"),
        ({"output_tokens": -5.0}, 0.2, "invalid_record:tokens"),
        ({"t_end": 0.0}, 0.2, "invalid_record:end_before_scheduled"),
        ({"t_first_answer": 0.0}, 0.2, "invalid_record:ttfo"),  # an answer before the request was sent
    ],
    ids=[
        "inf-e2e",
        "nan-e2e",
        "negative-e2e",
        "inf-ttft",
        "ttft-after-e2e",
        "negative-tokens",
        "end-before-start",
        "answer-before-sent",
    ],
)
def test_impossible_values_are_errors_with_a_reason(
    tmp_path: Path, baseline: dict[str, Any], damage: dict[str, float], share: float, reason: str
) -> None:
    storage = _run(tmp_path)
    _edit(tmp_path, "cheap", _set_ok_share(damage, share))
    _, doc = _analyze(storage)
    _no_new_answer(doc, baseline)
    cheap = next(v for v in doc["variants"] if v["name"] == "cheap")
    flagged = [s for s in cheap["stages"] if reason in s["errorsByReason"]]
    assert flagged
    assert all(any("impossible values" in n for n in s["notes"]) for s in flagged)
    assert all(s["sloOutcome"] != "meets" for s in flagged)
    assert all(s["sloPercentile"] is None or s["sloPercentile"] >= 0 for s in cheap["stages"])


def test_a_shard_without_a_required_column_is_refused(tmp_path: Path) -> None:
    storage = _run(tmp_path)
    first = _shards(tmp_path, "cheap")[0]
    pq.write_table(pq.read_table(first).drop_columns(["t_scheduled"]), first)
    with pytest.raises(ValueError, match=rf"{first.name}: column\(s\) t_scheduled missing"):
        _analyze(storage)


@pytest.mark.parametrize("values", [pa.float32(), pa.float64()])
def test_shards_with_itl_as_lists_give_the_same_report(
    tmp_path: Path, baseline: dict[str, Any], values: pa.DataType
) -> None:
    """Shards written before itl_s became float32 bytes hold list<float32> (or, by hand, doubles):
    they are read as the bytes would be, to the same numbers."""
    storage = _run(tmp_path)

    def as_lists(table: pa.Table) -> pa.Table:
        lists = [None if b is None else itl_gaps(b).tolist() for b in table["itl_s"].to_pylist()]
        return table.set_column(table.schema.get_field_index("itl_s"), "itl_s", pa.array(lists, pa.list_(values)))

    for variant in ("cheap", "good"):
        _edit(tmp_path, variant, as_lists)
    assert pq.read_schema(_shards(tmp_path, "good")[0]).field("itl_s").type == pa.list_(values)
    _, doc = _analyze(storage)
    assert [v["stages"] for v in doc["variants"]] == [v["stages"] for v in baseline["variants"]]


def test_a_shard_whose_gaps_are_not_float32_is_refused(tmp_path: Path) -> None:
    storage = _run(tmp_path)
    first = _shards(tmp_path, "good")[0]
    table = pq.read_table(first)
    cut = [None if b is None else b[:-1] or None for b in table["itl_s"].to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("itl_s"), "itl_s", pa.array(cut, pa.binary())), first)
    with pytest.raises(ValueError, match=rf"{first.name}: an itl_s value of \d+ bytes is not float32 gaps"):
        _analyze(storage)


def test_records_without_a_schedule_time_are_refused(tmp_path: Path) -> None:
    storage = _run(tmp_path)
    _edit(tmp_path, "cheap", _set_ok_share({"t_scheduled": math.nan}, 0.1))
    with pytest.raises(ValueError, match=r"have no valid t_scheduled .* no stage window can place them"):
        _analyze(storage)


def test_a_run_nested_in_the_records_does_not_count(tmp_path: Path, baseline: dict[str, Any]) -> None:
    """Another run whose prefix points inside this run's records/ (or any stray key) is left out,
    with a note naming it."""
    storage = _run(tmp_path)
    fast = _set_ok_share({}, 0.0)
    nested = tmp_path / "records" / "cheap" / "other" / "records" / "cheap"
    nested.mkdir(parents=True)
    for path in _shards(tmp_path, "good"):
        pq.write_table(fast(pq.read_table(path)), nested / path.name)
    _, doc = _analyze(storage)
    _no_new_answer(doc, baseline)
    assert any("not this run's record shards" in n and "records/cheap/other/records/cheap/" in n for n in doc["notes"])


@pytest.mark.parametrize("price", [-1.21, 0.0, math.nan, math.inf])
def test_a_price_that_is_not_finite_and_positive_is_refused(price: float) -> None:
    table = {
        "schemaVersion": 1, "currency": "USD", "baseRegion": "us-east-1", "regions": {}, "capacityTypes": {},
        "sources": {"mine": {"description": "negotiated"}}, "tokens": [],
        "instances": [{"service": "ec2", "source": "mine", "asOf": "2026-12-01", "usdPerHour": {"g5.2xlarge": price}}],
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"instances\.0\.usdPerHour\.`g5\.2xlarge`"):
        parse_price_table(table)


def test_the_price_is_that_of_the_instance_type_the_pods_ran_on(tmp_path: Path) -> None:
    """A nodeSelector can put a variant's pods on another type than spec.instanceType: what ran
    is priced, the recommendation names it, and a note names both."""
    storage = _run(tmp_path)
    good = SPEC.variants[1].model_copy(update={"price_per_hour": None, "engine": "vllm"})
    spec = SPEC.model_copy(update={"variants": [SPEC.variants[0], good]})
    # A simulator only plays its type and may run anywhere: what it ran on is not what it costs.
    simulated = SPEC.model_copy(
        update={"variants": [SPEC.variants[0], good.model_copy(update={"engine": "simulator"})]}
    )
    ignored = analyze_run(simulated, storage, benchmark="b", run_id="r", plots=False, ran_on={"good": ["g6e.12xlarge"]})
    assert ignored.recommendation is not None and ignored.recommendation.instance_type == "g6e.2xlarge"
    as_spec = analyze_run(spec, storage, benchmark="b", run_id="r", plots=False).recommendation
    moved = analyze_run(spec, storage, benchmark="b", run_id="r", plots=False, ran_on={"good": ["g6e.12xlarge"]})
    assert as_spec is not None and moved.recommendation is not None
    assert (as_spec.instance_type, moved.recommendation.instance_type) == ("g6e.2xlarge", "g6e.12xlarge")
    per_instance = {r.instance_type: r.cost_per_hour / r.instances for r in (as_spec, moved.recommendation)}
    assert per_instance["g6e.12xlarge"] > 3 * per_instance["g6e.2xlarge"]
    note = "good: its pods ran on g6e.12xlarge, not spec.instanceType g6e.2xlarge; priced as g6e.12xlarge, what ran"
    assert note in load_report(storage)["notes"]


def test_the_price_is_that_of_the_capacity_type_the_nodes_were_bought_at(tmp_path: Path) -> None:
    """Karpenter (or an EKS node group) may give spot capacity to a run priced on-demand, or the
    reverse: the capacity type the nodes had is priced, with a note; a simulator's is ignored."""
    storage = _run(tmp_path)
    good = SPEC.variants[1].model_copy(update={"price_per_hour": None, "engine": "vllm"})
    spec = SPEC.model_copy(update={"variants": [SPEC.variants[0], good]})
    on_demand = analyze_run(spec, storage, benchmark="b", run_id="r", plots=False).recommendation
    spot = analyze_run(spec, storage, benchmark="b", run_id="r", plots=False, bought={"good": ["spot"]})
    assert on_demand is not None and spot.recommendation is not None
    assert spot.recommendation.cost_per_hour == pytest.approx(on_demand.cost_per_hour * 0.4)  # the table's spot 0.6 off
    note = "good: its nodes were spot capacity, not analysis.pricing.capacityType on-demand; priced as spot, what ran"
    assert note in load_report(storage)["notes"]
    # A run priced at spot whose nodes were partly on-demand is priced on-demand (the dearest)
    as_spot = spec.model_copy(
        update={"analysis": spec.analysis.model_copy(update={"pricing": Pricing(capacity_type="spot")})}
    )
    mixed = analyze_run(
        as_spot, storage, benchmark="b", run_id="r", plots=False, bought={"good": ["on-demand", "spot"]}
    )
    assert mixed.recommendation is not None and mixed.recommendation.cost_per_hour == pytest.approx(
        on_demand.cost_per_hour
    )
    # Savings plans discount on-demand capacity: on-demand nodes keep the plan's price
    plan = spec.model_copy(
        update={"analysis": spec.analysis.model_copy(update={"pricing": Pricing(capacity_type="savings-plan")})}
    )
    kept = analyze_run(plan, storage, benchmark="b", run_id="r", plots=False, bought={"good": ["on-demand"]})
    assert kept.recommendation is not None and kept.recommendation.cost_per_hour == pytest.approx(
        on_demand.cost_per_hour * 0.7
    )
    simulated = spec.model_copy(
        update={"variants": [SPEC.variants[0], good.model_copy(update={"engine": "simulator"})]}
    )
    ignored = analyze_run(simulated, storage, benchmark="b", run_id="r", plots=False, bought={"good": ["spot"]})
    assert ignored.recommendation is not None and ignored.recommendation.cost_per_hour == pytest.approx(
        on_demand.cost_per_hour
    )
