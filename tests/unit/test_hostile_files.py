"""Hostile spec files get one line that says what is wrong, from `validate` and from `run`, and never
a traceback or a runaway parse (docs/security.md, "Hostile files")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmbench_k8s.api import parse_benchmark
from fmbench_k8s.api.benchmark import load_documents
from fmbench_k8s.api.documents import MAX_BYTES, MAX_DEPTH, MAX_NODES, DocumentError, parse_documents
from fmbench_k8s.cli import main
from tests.corpus import REPO

QUICKSTART = (REPO / "examples" / "quickstart.yaml").read_text()


def _alias_bomb() -> str:
    """Billion laughs: 10 nested levels of ten aliases each, 10^10 values once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 11)]
    return QUICKSTART.replace("metadata:\n", "metadata:\n  annotations:\n" + "".join(f"    {x}\n" for x in lines), 1)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "alias-bomb": (_alias_bomb().encode(), f"expands to more than {MAX_NODES} values"),
    "deep-flow": (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", f"nested more than {MAX_DEPTH} levels deep"),
    "deep-block": ("".join("  " * i + f"k{i}:\n" for i in range(500)).encode(), "nested more than"),
    "not-utf8": (QUICKSTART.encode().replace(b"Benchmark", b"Bench\xffmark", 1), "not UTF-8 text (byte 0xff"),
    "too-large": (b"a: " + b"x" * (50 << 20) + b"\n", f"larger than the {MAX_BYTES:,} bytes"),
    "duplicate-key": (QUICKSTART.replace("spec:\n", "spec:\n  slo: {}\n", 1).encode(), "key 'slo' appears twice"),
    "broken-yaml": (b"a: b\n  c: d: e\n", "line 2, column 4: mapping values are not allowed here"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_hostile_file_gets_one_line_from_validate_and_run(
    name: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, expected = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(data)
    args = (
        ["validate", "--local", str(path)] if command == "validate" else ["run", str(path), "-o", str(tmp_path / "o")]
    )
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line ...
    assert err.startswith(f"{path}: ") and expected in err, err  # ... naming the file and the problem
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_anchors_and_merge_keys_still_work_within_the_bounds() -> None:
    """GitOps specs share variant settings through anchors: YAML's override rules hold."""
    text = QUICKSTART.replace("    - name: g5-sim\n", "    - &base\n      name: g5-sim\n", 1).replace(
        "  workload:\n", "    - <<: *base\n      name: second\n  workload:\n", 1
    )
    docs = parse_documents(text.encode(), "anchored.yaml")
    bench = parse_benchmark(docs[0])
    assert [v.name for v in bench.spec.variants] == ["g5-sim", "g6e-sim", "inf2-sim", "second"]
    assert bench.spec.variants[3].instance_type == "g5.2xlarge"


def test_the_largest_spec_the_api_allows_is_within_the_bounds(tmp_path: Path) -> None:
    """32 variants with full lists: the bounds refuse hostile files, not big honest ones."""
    doc = yaml.safe_load(QUICKSTART)
    variant = {
        **doc["spec"]["variants"][0],
        "args": [f"--flag-{i}" for i in range(64)],
        "env": [{"name": f"E{i}", "value": "v" * 64} for i in range(64)],
    }
    doc["spec"]["variants"] = [{**variant, "name": f"v{i}"} for i in range(32)]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert len(load_documents(path)) == 1


def test_a_duplicate_key_deep_in_the_spec_names_its_line() -> None:
    text = QUICKSTART.replace("metadata:\n", "metadata:\n  labels: {a: x, a: y}\n", 1)
    with pytest.raises(DocumentError, match=r"^yaml: line \d+, column \d+: key 'a' appears twice"):
        parse_documents(text.encode(), "x.yaml")
