"""The Benchmark models: samples, the invalid corpus, defaults, the CLI validator, the CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmbench_k8s.api import SpecError, parse_benchmark
from fmbench_k8s.api.crd import build_crd, render_crd
from fmbench_k8s.cli import main
from tests.corpus import REPO, InvalidCase, invalid_cases, repo_benchmark_files

CASES = invalid_cases()


def test_the_repository_has_samples_for_every_kind_of_variant() -> None:
    files = repo_benchmark_files()
    assert len(files) >= 6
    text = "\n".join(p.read_text() for p in files)
    for needle in ("engine: vllm", "engine: neuronx-vllm", "engine: simulator", "api: bedrock", "api: sagemaker",
                   "api: openai-chat"):  # fmt: skip
        assert needle in text, needle


@pytest.mark.parametrize("path", repo_benchmark_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_benchmark_yaml_in_the_repo_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Samples for the cluster pass the operator's rules too; examples/ are for `fmbench-k8s run`."""
    local = ["--local"] if path.is_relative_to(REPO / "examples") else []
    assert main(["validate", *local, str(path)]) == 0, capsys.readouterr().err


def test_validate_refuses_what_the_operator_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = REPO / "examples" / "quickstart.yaml"
    assert main(["validate", str(quickstart)]) == 1
    assert "spec.report.s3: required on a cluster" in capsys.readouterr().err
    assert main(["validate", "--local", str(quickstart)]) == 0
    doc = yaml.safe_load((REPO / "crds/samples/vllm-gpu.yaml").read_text())
    doc["spec"]["variants"] = [{"name": "t", "engine": "triton-trtllm", "instanceType": "g6e.2xlarge"}]
    triton = tmp_path / "triton.yaml"
    triton.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(triton)]) == 1
    assert "spec.variants[0].image: engine triton-trtllm serves a model repository" in capsys.readouterr().err
    doc["spec"]["variants"][0]["image"] = "registry.example/triton-with-my-engine:1"
    triton.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(triton)]) == 0


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.case for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.case)
def test_invalid_benchmark_is_rejected_naming_the_field(case: InvalidCase) -> None:
    with pytest.raises(SpecError) as info:
        parse_benchmark(case.doc)
    assert any(p.startswith(case.field + ":") or p.startswith(case.field + ".") for p in info.value.problems), (
        info.value.problems
    )


@pytest.mark.parametrize("case", CASES[:5], ids=lambda c: c.case)
def test_cli_validate_exits_non_zero_with_one_line_per_problem(
    case: InvalidCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(case.doc))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: {case.field}" in err


def test_cli_validate_reports_unreadable_and_non_benchmark_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert main(["validate", str(other), str(broken), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "cm.yaml: document: no fmbench.io/v1alpha1 Benchmark in the file (it holds ConfigMap)" in err
    assert "broken.yaml: yaml: line 2, column 1: " in err
    assert "missing.yaml: file: cannot read" in err


def test_defaults_are_filled() -> None:
    doc = yaml.safe_load((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    del doc["spec"]["load"]  # the sample shortens its stages
    spec = parse_benchmark(doc).spec
    assert spec.cleanup == "Always"
    assert spec.analysis.headroom == 0.8
    assert spec.analysis.pricing.source == "builtin"
    assert spec.analysis.pricing.region == "us-east-1"
    assert spec.slo.max_error_rate == 0.01
    assert spec.load.mode == "search" and spec.load.arrival == "closed"
    assert spec.load.warmup_s == 10 and spec.load.drain_s == 30 and spec.load.stage_duration_s == 60
    assert spec.variants[0].replicas == 1 and spec.variants[0].accelerators is None
    assert spec.timeouts.model_ready == "45m"


def test_committed_crd_matches_the_models() -> None:
    committed = (REPO / "crds" / "fmbench.io_benchmarks.yaml").read_text()
    assert committed == render_crd(), "CRD drifted from the models: run `make crd` and commit the result"


def test_crd_is_structural_and_carries_the_cel_rules() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def walk(node: dict[str, object], path: str) -> None:
        assert "anyOf" not in node and "$ref" not in node and "oneOf" not in node, path
        # Kubernetes' structural rule: a type everywhere but where any JSON is kept as given
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True, f"{path} has no type"
        for key, child in node.get("properties", {}).items():  # type: ignore[attr-defined]
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")  # type: ignore[arg-type]

    walk(schema, "spec")
    variants = schema["properties"]["variants"]
    assert variants["x-kubernetes-list-type"] == "map"
    assert variants["x-kubernetes-list-map-keys"] == ["name"]
    rules = [r["rule"] for r in variants["items"]["x-kubernetes-validations"]]
    assert "has(self.engine) != has(self.endpoint)" in rules
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:2] == ["Phase", "Recommendation"]
    assert crd["spec"]["names"]["shortNames"] == ["fmb"]


def test_committed_api_reference_matches_the_models() -> None:
    from fmbench_k8s.api.docs import render

    assert (REPO / "docs" / "api.md").read_text() == render(), "docs/api.md is stale: run `make docs`"


def test_validate_takes_files_directories_and_stdin_as_kubectl_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    nested = tmp_path / "team" / "a"
    nested.mkdir(parents=True)
    for name in ("one.yaml", "two.yml"):
        (nested / name).write_text((REPO / "crds/samples/simulator-cluster.yaml").read_text())
    (nested / "notes.txt").write_text("not a spec")
    (nested / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
    assert main(["validate", "-f", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{nested / 'one.yaml'}: valid" in out and f"{nested / 'two.yml'}: valid" in out and "notes" not in out
    assert f"{nested / 'kustomization.yaml'}: skipped (no fmbench.io document)" in out
    (nested / "typo.yaml").write_text("apiVersion: fmbench.io/v1alpha1\nkind: Benchmarks\n")
    assert main(["validate", "-f", str(tmp_path)]) == 1  # a typo in a directory is still found
    assert "typo.yaml: kind: 'Benchmarks' is not a kind" in capsys.readouterr().err
    (nested / "typo.yaml").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 1
    assert capsys.readouterr().err == f"{empty}: directory: holds no *.yaml or *.yml file\n"
    text = (REPO / "crds/samples/simulator-cluster.yaml").read_text()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out == "-: valid (1 Benchmark)\n"
    assert main(["validate"]) == 2  # nothing to check is a usage error, not a silent success
