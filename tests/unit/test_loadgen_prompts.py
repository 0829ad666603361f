"""Synthetic prompts, output lengths and datasets (fmbench_k8s.loadgen.prompts and .datasets)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fmbench_k8s.api.spec import TokenDistribution, Workload
from fmbench_k8s.loadgen.datasets import (
    HF_OFFLINE_MESSAGE,
    DatasetError,
    load_dataset_bytes,
    load_texts,
    token_counter,
)
from fmbench_k8s.loadgen.prompts import Corpus, PromptSource, draw_tokens, load_corpus
from fmbench_k8s.simulator.tokenizer import count_tokens
from tests.corpus import REPO


def _workload(**kw: object) -> Workload:
    doc = {"requestsPerMinute": 60, "promptTokens": {"mean": 200, "stddev": 40, "min": 120, "max": 260},
           "outputTokens": {"mean": 64, "stddev": 8}, **kw}  # fmt: skip
    return Workload.model_validate(doc)


def test_synthetic_prompts_have_exactly_the_drawn_number_of_simulator_tokens() -> None:
    source = PromptSource(_workload(), "0:0")
    lengths = []
    for _ in range(300):
        p = source.next()
        assert p.prompt_tokens is not None
        assert count_tokens(p.text) == p.prompt_tokens
        assert 120 <= p.prompt_tokens <= 260 and p.max_tokens >= 1
        lengths.append(p.prompt_tokens)
    assert sum(lengths) / len(lengths) == pytest.approx(200, rel=0.05)


def test_prompts_are_reproducible_per_stream_and_differ_between_streams() -> None:
    a = [PromptSource(_workload(), "0:1").next() for _ in range(1)]
    b = [PromptSource(_workload(), "0:1").next() for _ in range(1)]
    c = [PromptSource(_workload(), "1:1").next() for _ in range(1)]
    assert a == b and a != c
    source = PromptSource(_workload(), "0:2")
    firsts = {" ".join(source.next().text.split()[:8]) for _ in range(50)}
    assert len(firsts) > 45, "prompts must differ from their first words (prefix caches)"


def test_very_long_prompts_wrap_the_word_pool() -> None:
    w = _workload(promptTokens={"mean": 150_000})
    p = PromptSource(w, "x").next()
    assert count_tokens(p.text) == 150_000


def test_draw_tokens_clips_and_is_constant_without_stddev() -> None:
    rng = random.Random(0)
    assert {draw_tokens(TokenDistribution(mean=10), rng) for _ in range(20)} == {10}
    wide = TokenDistribution(mean=10, stddev=100, min=5, max=12)
    values = [draw_tokens(wide, rng) for _ in range(500)]
    assert min(values) == 5 and max(values) == 12
    assert all(draw_tokens(TokenDistribution(mean=2, stddev=50), rng) >= 1 for _ in range(200))


def _jsonl(rows: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_dataset_from_a_local_path_and_a_configmap_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(_jsonl([{"prompt": "one two three", "max_tokens": 7}, {"prompt": "four five"}]))
    w = _workload(dataset={"uri": str(path)})
    texts = load_texts(w)
    assert texts == [("one two three", 7), ("four five", None)]
    source = PromptSource(w, "0:0", Corpus(texts))
    seen = {source.next().text for _ in range(10)}
    assert seen == {"one two three", "four five"}
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "data.jsonl").write_text(_jsonl([{"text": "hi there"}]))
    monkeypatch.setenv("FMBENCH_DATASETS_DIR", str(tmp_path))
    cm = _workload(dataset={"uri": "configmap://prompts/data.jsonl", "promptField": "text"})
    assert load_texts(cm) == [("hi there", None)]


def test_dataset_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read dataset"):
        load_dataset_bytes(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        load_texts(_workload(dataset={"uri": str(bad)}))
    with pytest.raises(DatasetError, match="string field 'prompt'"):
        load_texts(_workload(dataset={"uri": str(_write(tmp_path, '{"q": 1}'))}))
    with pytest.raises(DatasetError, match="configmap://NAME/KEY"):
        load_dataset_bytes("configmap://only-name")
    with pytest.raises(DatasetError, match="unsupported"):
        load_dataset_bytes("ftp://x/y")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.jsonl"
    p.write_text(text)
    return p


def test_hf_datasets_fail_offline_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode: the same failure as the unreachable hub here, without its 24 s of retries.
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError) as info:
        load_dataset_bytes("hf://some-org/some-dataset")
    assert str(info.value).startswith(HF_OFFLINE_MESSAGE)


def test_hf_datasets_from_a_local_directory_as_the_hub_would_give_them(tmp_path: Path) -> None:
    """The hub is unreachable here: the same loading code reads a dataset saved with save_to_disk
    and a directory of data files (what a downloaded hub dataset holds)."""
    import datasets

    questions = [f"what is {i} + {i}?" for i in range(5)]
    saved, files = tmp_path / "saved", tmp_path / "files"
    datasets.Dataset.from_dict({"question": questions, "max_tokens": [8] * 5}).save_to_disk(str(saved))
    files.mkdir()
    (files / "train.jsonl").write_text("\n".join(json.dumps({"question": q}) for q in questions))
    for where in (saved, files):
        text = load_dataset_bytes(f"hf://{where}").decode()
        assert [json.loads(line)["question"] for line in text.splitlines()] == questions, where
    texts = load_texts(_workload(dataset={"uri": f"hf://{saved}", "promptField": "question"}))
    assert texts is not None and [t for t, _ in texts] == questions
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="cannot read the dataset directory"):
        load_dataset_bytes(f"hf://{empty}")


def test_dataset_from_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="prompts")
        s3.put_object(Bucket="prompts", Key="sets/a.jsonl", Body=_jsonl([{"prompt": "from s3"}]).encode())
        assert load_texts(_workload(dataset={"uri": "s3://prompts/sets/a.jsonl"})) == [("from s3", None)]
        with pytest.raises(DatasetError, match=r"cannot read dataset s3://prompts/none\.jsonl"):
            load_dataset_bytes("s3://prompts/none.jsonl")
        # a trace and a tokenizer.json come the same way (docs/workloads.md)
        trace = REPO / "examples" / "traces" / "mooncake-sample.jsonl"
        s3.put_object(Bucket="prompts", Key="traces/m.jsonl", Body=trace.read_bytes())
        w = _workload(trace={"uri": "s3://prompts/traces/m.jsonl", "format": "mooncake"})
        corpus = load_corpus(w)
        assert corpus is not None and corpus.replay is not None and len(corpus.replay.offsets) == 300
        with pytest.raises(DatasetError, match=r"cannot read tokenizer s3://prompts/none\.json"):
            token_counter("s3://prompts/none.json")


def test_parquet_datasets_with_their_own_output_budgets(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"text": ["alpha", "beta", "gamma"], "max_tokens": [16, None, 0]}), path)
    texts = load_texts(_workload(dataset={"uri": str(path), "format": "parquet", "promptField": "text"}))
    assert texts == [("alpha", 16), ("beta", None), ("gamma", None)]  # no or no positive budget: the workload's
    with pytest.raises(DatasetError, match=r"no column 'prompt' \(columns: text, max_tokens\); set promptField"):
        load_texts(_workload(dataset={"uri": str(path), "format": "parquet"}))
    with pytest.raises(DatasetError, match=r"not UTF-8 text .* set format: parquet"):
        load_texts(_workload(dataset={"uri": str(path), "promptField": "text"}))


def test_sharegpt_conversations_give_their_first_user_turn(tmp_path: Path) -> None:
    conversations = [
        {"conversations": [{"from": "human", "value": "hello?"}, {"from": "gpt", "value": "hi"}]},
        {"conversations": [{"from": "gpt", "value": "I speak first"}]},  # no user turn: no prompt
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}],
         "max_tokens": 12},
    ]  # fmt: skip
    as_list, as_lines = tmp_path / "list.json", tmp_path / "lines.jsonl"
    as_list.write_text(json.dumps(conversations))
    as_lines.write_text("\n".join(json.dumps(c) for c in conversations))
    for path in (as_list, as_lines):
        texts = load_texts(_workload(dataset={"uri": str(path), "format": "sharegpt"}))
        assert texts == [("hello?", None), ("why?", 12)], path
    as_lines.write_text('{"turns": []}')
    with pytest.raises(DatasetError, match="conversation 1: expected an object with conversations or messages"):
        load_texts(_workload(dataset={"uri": str(as_lines), "format": "sharegpt"}))


def test_a_sample_is_the_same_for_the_same_seed_and_never_repeats_a_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join(json.dumps({"prompt": f"p{i}"}) for i in range(100)))

    def sample(seed: int) -> list[str]:
        w = _workload(dataset={"uri": str(path), "sample": 10}, seed=seed)
        texts = load_texts(w)
        assert texts is not None
        return [t for t, _ in texts]

    first = sample(1)
    assert len(first) == len(set(first)) == 10 and first == sample(1)
    assert sample(2) != first
    whole = load_texts(_workload(dataset={"uri": str(path), "sample": 1000}))
    assert whole is not None and len(whole) == 100  # a sample larger than the dataset is all of it


BUCKETS = [
    {"name": "short", "minTokens": 10, "maxTokens": 50, "share": 0.7},
    {"name": "long", "minTokens": 400, "maxTokens": 500, "share": 0.3, "outputTokens": {"mean": 9}},
]


def test_synthetic_bucketed_prompts_follow_each_bucket_range_share_and_output_length() -> None:
    w = Workload.model_validate({"requestsPerMinute": 60, "outputTokens": {"mean": 64}, "buckets": BUCKETS})
    source = PromptSource(w, "0:0")
    prompts = [source.next() for _ in range(4000)]
    by = {name: [p for p in prompts if p.bucket == name] for name in ("short", "long")}
    assert len(by["short"]) + len(by["long"]) == len(prompts)
    assert abs(len(by["long"]) / len(prompts) - 0.3) < 0.03  # binomial sd 0.007
    for name, (lo, hi, out) in {"short": (10, 50, 64), "long": (400, 500, 9)}.items():
        lengths = [count_tokens(p.text) for p in by[name]]
        assert lengths == [p.prompt_tokens for p in by[name]]
        assert all(p.max_tokens == out for p in by[name])
        assert (min(lengths), max(lengths)) == (lo, hi)  # the range is covered to both ends, and no further
    # P and G of the mix, as the report states them: uniform ranges and the buckets' output lengths
    mean_p, sd_p = w.prompt_mix()
    assert mean_p == pytest.approx(0.7 * 30 + 0.3 * 450)
    lengths = [p.prompt_tokens or 0 for p in prompts]
    assert sum(lengths) / len(lengths) == pytest.approx(mean_p, rel=0.03)
    assert (sum((x - mean_p) ** 2 for x in lengths) / len(lengths)) ** 0.5 == pytest.approx(sd_p, rel=0.03)
    assert w.output_mix()[0] == pytest.approx(0.7 * 64 + 0.3 * 9)


def test_dataset_prompts_are_sorted_into_buckets_by_word_count_without_a_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows: list[dict[str, object]] = [{"prompt": " ".join(["w"] * n)} for n in (12, 20, 45, 420, 499, 700, 3)]
    path.write_text(_jsonl(rows))
    w = Workload.model_validate({"requestsPerMinute": 60, "outputTokens": {"mean": 8}, "buckets": BUCKETS,
                                 "dataset": {"uri": str(path)}})  # fmt: skip
    corpus = load_corpus(w)
    assert corpus is not None
    assert corpus.by_bucket == {"short": [0, 1, 2], "long": [3, 4]}  # 700 and 3 words fall in no bucket
    source = PromptSource(w, "0:0", corpus)
    for p in (source.next() for _ in range(300)):
        n = len(p.text.split())
        assert (p.bucket, p.prompt_tokens) == ("short" if n < 100 else "long", None)
        assert p.max_tokens == (8 if p.bucket == "short" else 9)


def test_a_bucket_no_dataset_prompt_falls_in_is_refused_naming_it_and_the_data_range(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(_jsonl([{"prompt": "a b c d e f g h i j k l"}]))
    w = Workload.model_validate({"requestsPerMinute": 60, "outputTokens": {"mean": 8}, "buckets": BUCKETS,
                                 "dataset": {"uri": str(path)}})  # fmt: skip
    with pytest.raises(DatasetError, match=r"falls in long \(400-500\), counted in whitespace-separated words; "
                       r"the dataset's prompts have 12-12"):  # fmt: skip
        load_corpus(w)


def test_a_tokenizer_json_counts_prompts_as_the_model_does(tmp_path: Path) -> None:
    """A real tokenizer.json (a word-level one, trained here: no download) counts where words would not."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation off: "a," is two tokens
    tok.train_from_iterator(["a b c , ."], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    count, unit = token_counter(str(path))
    assert count(["a, b, c.", "a b"]) == [6, 2] and unit == f"tokens of {path}"
    assert token_counter(f"hf://{tmp_path}")[0](["a, b"]) == [3]  # a model's directory, as downloaded
    assert token_counter(None)[0](["a, b, c."]) == [3]
    with pytest.raises(DatasetError, match="cannot read tokenizer"):
        token_counter(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"not a tokenizer\.json"):
        token_counter(str(tmp_path / "bad.json"))


def test_longbench_records_and_prompt_templates_make_the_prompt_from_the_rows_fields(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sample = REPO / "examples" / "datasets" / "longbench-sample.jsonl"
    records = [json.loads(line) for line in sample.read_text().splitlines()]
    rows = load_texts(_workload(dataset={"uri": str(sample), "format": "longbench"}))
    assert rows == [(f"{r['context']}\n\n{r['input']}", None) for r in records]
    # FMBench-style templates over any format's fields
    templated = load_texts(_workload(dataset={"uri": str(sample), "promptTemplate": "Q: {input} [{_id}]"}))
    assert templated is not None and templated[0] == (f"Q: {records[0]['input']} [s000]", None)
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"q": ["a", "b"], "doc": ["x", "y"], "max_tokens": [3, 4]}), parquet)
    assert load_texts(_workload(dataset={"uri": str(parquet), "format": "parquet", "promptTemplate": "{doc}/{q}"})) == [
        ("x/a", 3), ("y/b", 4)]  # fmt: skip
    with pytest.raises(DatasetError, match="dataset line 2: no field 'context' for promptTemplate"):
        load_texts(_workload(dataset={"uri": str(_write(tmp_path, '{"context": "c", "input": "i"}\n{"input": "i"}')),
                                      "format": "longbench"}))  # fmt: skip
    for bad, message in (("{0} x", "is not a field name"), ("plain", "names no field"), ("{abc", "expected .}.")):
        with pytest.raises(ValueError, match=message):
            _workload(dataset={"uri": str(sample), "promptTemplate": bad})
