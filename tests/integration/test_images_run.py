"""Prompts with images, end to end on the simulator (examples/multimodal.yaml, docs/workloads.md):
the synthetic images reach the server with every prompt, their tokens and time are the timing
model's, the records keep their bytes, pixels and size, and the report splits each stage by size;
a dataset's own images are read beside it from S3."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fmbench_k8s.contract.images import image_facts, pixel_class
from fmbench_k8s.simulator.params import SimParams
from fmbench_k8s.simulator.profiles import profile_for
from tests.corpus import REPO
from tests.integration.localrun import benchmark, run_benchmark

pytestmark = pytest.mark.integration


def _records(run: Path, variant: str) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((run / "records" / variant).glob("*.parquet")))


def test_the_large_images_decide_and_the_report_shows_it_by_size(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "examples" / "multimodal.yaml").read_text())
    done, run = run_benchmark(doc, tmp_path)
    sizes = {s["name"]: (s["width"], s["height"]) for s in doc["spec"]["workload"]["images"]["sizes"]}
    text = doc["spec"]["workload"]["promptTokens"]["mean"]
    for variant, instance in (("g5-vlm", "g5.2xlarge"), ("g6e-vlm", "g6e.2xlarge")):
        ok = _records(run, variant).query("ok")
        assert (ok["images"] == 1).all() and set(ok["image_size"]) == set(sizes)
        params = profile_for(instance)
        for name, (w, h) in sizes.items():
            rows = ok[ok["image_size"] == name]
            tokens = text + params.image_tokens(w, h)  # the server's count: words and 28-px squares
            assert (rows["prompt_tokens"] == tokens).all() and (rows["image_pixels"] == w * h).all()
            assert rows["image_bytes"].between(w * h * 2.5 / 8, w * h * 3.5 / 8).all()  # ~3 bits a pixel
            # below max_num_seqs nothing queues: TTFT is the prefill of text and image, plus the client's share
            expected = params.prefill_s(tokens)
            first = rows[rows["stage"] == 0]["ttft_s"].median()
            assert expected - 0.002 < first < expected + 0.03, (variant, name, first, expected)
    report = json.loads((run / "report.json").read_text())
    assert report["workload"]["images"]["sizes"][1] == {"name": "large", "width": 1344, "height": 1008, "share": 0.3}
    by = {v["name"]: v for v in report["variants"]}
    assert report["recommendation"]["variant"] == "g6e-vlm" and by["g5-vlm"]["pricePerHour"] < by["g6e-vlm"][
        "pricePerHour"
    ]  # fmt: skip
    # g5's small-image requests meet the bound, its large ones fail it: they alone sink the variant
    for stage in by["g5-vlm"]["stages"]:
        split = {g["name"]: g for g in stage["imageSizes"]}
        assert split["large"]["sloOutcome"] == "fails" and split["small"]["sloOutcome"] != "fails"
        assert sum(g["requests"] for g in split.values()) == stage["steady"]["requests"]
        assert split["small"]["meanImageBytes"] < stage["meanImageBytes"] < split["large"]["meanImageBytes"]
    assert "## By image size" in (run / "report.md").read_text() and "g6e-vlm" in done.stdout


def test_a_datasets_images_are_read_beside_it_from_s3_and_grouped_by_megapixels(
    tmp_path: Path, s3: dict[str, str]
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL_S3"])
    client.create_bucket(Bucket="vqa")
    folder = REPO / "examples" / "datasets"
    rows = [json.loads(line) for line in (folder / "colors-vqa.jsonl").read_text().splitlines()]
    client.put_object(Bucket="vqa", Key="sets/colors-vqa.jsonl", Body=(folder / "colors-vqa.jsonl").read_bytes())
    for row in rows:  # the rows name their images relative to the dataset's folder
        client.put_object(Bucket="vqa", Key=f"sets/{row['image']}", Body=(folder / row["image"]).read_bytes())
    doc = benchmark(
        "vqa",
        [{"name": "sim", "engine": "simulator", "instanceType": "g5.2xlarge"}],
        {"requestsPerMinute": 120, "promptTokens": {"mean": 12}, "outputTokens": {"mean": 4},
         "dataset": {"uri": "s3://vqa/sets/colors-vqa.jsonl", "promptField": "question", "imageField": "image"}},
        {"latency": {"metric": "ttft", "percentile": 50, "maxSeconds": 2}},
        {"mode": "fixed", "concurrency": {"levels": [2]}, "workers": 1, "warmup": "1s", "stageDuration": "4s",
         "drain": "2s"},
    )  # fmt: skip
    _, run = run_benchmark(doc, tmp_path)
    ok = _records(run, "sim").query("ok")
    images = [image_facts((folder / r["image"]).read_bytes(), r["image"]) for r in rows]
    words = len(rows[0]["question"].split())
    expected = {words + SimParams().image_tokens(i.width, i.height): i for i in images}
    assert len(ok) > 20 and set(ok["prompt_tokens"]) <= set(expected)
    assert len(set(ok["prompt_tokens"])) >= 4  # most of the six images were drawn
    for tokens in set(ok["prompt_tokens"]):
        group, image = ok[ok["prompt_tokens"] == tokens], expected[tokens]
        assert (group["image_pixels"] == image.width * image.height).all()
        assert (group["image_bytes"] == len(image.data)).all()
        assert (group["image_size"] == pixel_class(image.width * image.height)).all()
    report = json.loads((run / "report.json").read_text())
    assert report["workload"]["images"] == {"perPrompt": None, "sizes": None, "datasetField": "image"}
    (stage,) = report["variants"][0]["stages"]
    assert {g["name"] for g in stage["imageSizes"]} <= {"under-0.25mp", "0.25-1mp", "1-4mp"}
