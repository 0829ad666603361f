"""Datasets of prompts: reading them (a path, s3://, configmap://, hf://), parsing their formats
(JSONL, Parquet, ShareGPT conversations, LongBench records, prompt templates over a row's fields)
and counting their prompts' tokens (a tokenizer.json, or words). docs/loadgen.md, "Prompts".

Datasets are JSONL (one object per line, the prompt in ``promptField``; an optional integer
``max_tokens``/``output_tokens`` overrides the drawn output length) from a local path,
``s3://bucket/key``, ``configmap://NAME/KEY`` (mounted at /etc/fmbench-datasets/NAME/KEY, or
$FMBENCH_DATASETS_DIR/NAME/KEY) or ``hf://DATASET`` (through the ``datasets`` library).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from fmbench_k8s.api.spec import CONFIGMAP_URI, LONGBENCH_TEMPLATE, Dataset, Workload, template_fields
from fmbench_k8s.contract.images import Image, ImageError, decode_data_url, image_facts
from fmbench_k8s.contract.layout import DATASETS_DIR

HF_OFFLINE_MESSAGE = (
    "hf:// needs network access to the Hugging Face Hub; download the dataset and use hf:///its/local/directory, "
    "a JSONL path or an s3:// URI"
)


class DatasetError(ValueError):
    """A dataset that cannot be read; the message says what to do."""


def token_counter(uri: str | None, storage_endpoint: str | None = None) -> tuple[Callable[[list[str]], list[int]], str]:
    """A function counting the tokens of many prompts, and what it counts in (for messages).

    Without a tokenizer, whitespace-separated words: what the simulator counts; a BPE tokenizer
    gives English text about 1.3 tokens per word (docs/workloads.md)."""
    if uri is None:
        return (lambda texts: [len(t.split()) for t in texts]), "whitespace-separated words"
    from tokenizers import Tokenizer

    data = _tokenizer_json(uri, storage_endpoint)
    try:
        tok = Tokenizer.from_str(data.decode())
    except Exception as exc:
        raise DatasetError(f"workload.tokenizer {uri}: not a tokenizer.json ({exc})") from None

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    return count, f"tokens of {uri}"


def _tokenizer_json(uri: str, storage_endpoint: str | None) -> bytes:
    """tokenizer.json from a path, s3:// or hf://MODEL (hf:///dir: a downloaded model's directory)."""
    if uri.startswith("hf://"):
        name = uri.removeprefix("hf://")
        local = Path(name)
        if local.is_absolute():
            return read_file(local / "tokenizer.json" if local.is_dir() else local, f"tokenizer {uri}")
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(name, "tokenizer.json")).read_bytes()
        except Exception as exc:
            raise DatasetError(
                f"workload.tokenizer {uri}: cannot download tokenizer.json ({type(exc).__name__}); without network "
                "access, download it and name its path, s3:// copy or hf:///model/directory"
            ) from None
    return read_path_or_s3(uri, storage_endpoint, "tokenizer", "hf://MODEL")


def read_path_or_s3(uri: str, storage_endpoint: str | None, what: str, also: str = "") -> bytes:
    """A local file or an S3 object (a tokenizer, a trace); ``also`` names other URIs the caller takes."""
    if uri.startswith("s3://"):
        return read_s3(uri, storage_endpoint, what)
    if "://" in uri:
        raise DatasetError(
            f"unsupported {what} URI {uri!r}: use a path, s3://BUCKET/KEY{' or ' + also if also else ''}"
        )
    return read_file(Path(uri), f"{what} {uri}")


def load_texts(workload: Workload, storage_endpoint: str | None = None) -> list[tuple[str, int | None]] | None:
    """The workload's dataset rows (prompt, max_tokens or None); None for synthetic prompts."""
    loaded = load_rows(workload, storage_endpoint)
    return loaded.prompts if loaded is not None else None


class Rows(NamedTuple):
    """A dataset's rows: (prompt, max_tokens or None), and per row its reference answers
    (dataset.referenceField) and its images (dataset.imageField)."""

    prompts: list[tuple[str, int | None]]
    references: list[tuple[str, ...]] | None = None
    images: list[tuple[Image, ...]] | None = None


def load_rows(workload: Workload, storage_endpoint: str | None = None) -> Rows | None:
    """The workload's dataset rows; None for synthetic prompts. With ``dataset.sample``, that many
    rows drawn without replacement, the same for every worker and run with the same ``workload.seed``."""
    ds = workload.dataset
    if ds is None:
        return None
    data = load_dataset_bytes(ds.uri, storage_endpoint)
    template = ds.prompt_template or (LONGBENCH_TEMPLATE if ds.format == "longbench" else None)
    if template is not None and ds.format != "sharegpt":
        rows = _templated(data, ds.uri, ds.format, template)
    elif ds.format == "parquet":
        rows = parse_parquet(data, ds.prompt_field)
    elif ds.format == "sharegpt":
        rows = parse_sharegpt(_text(data, ds.uri))
    else:
        rows = parse_jsonl(_text(data, ds.uri), ds.prompt_field)
    if not rows:
        raise DatasetError(f"dataset {ds.uri} has no prompts")
    refs = _references(data, ds) if ds.reference_field is not None else None
    images = _images(data, ds, storage_endpoint) if ds.image_field is not None else None
    if ds.sample is not None and ds.sample < len(rows):
        picked = sorted(random.Random(f"dataset:{workload.seed}").sample(range(len(rows)), ds.sample))
        rows = [rows[i] for i in picked]
        refs = [refs[i] for i in picked] if refs is not None else None
        images = [images[i] for i in picked] if images is not None else None
    return Rows(rows, refs, images)


def _field_values(data: bytes, ds: Dataset, field: str, what: str) -> tuple[list[tuple[int, Any]], str]:
    """Each row's value of ``field`` (None where a JSONL object lacks it), with its row or line
    number, and which of the two it is."""
    if ds.format == "parquet":
        table = _parquet_table(data)
        if field not in table.column_names:
            raise DatasetError(f"dataset: no column {field!r} for {what} (columns: {', '.join(table.column_names)})")
        return list(enumerate(table.column(field).to_pylist(), 1)), "row"
    objs = _jsonl_objects(_text(data, ds.uri))
    return [(n, obj.get(field) if isinstance(obj, dict) else None) for n, obj in objs], "line"


def _references(data: bytes, ds: Dataset) -> list[tuple[str, ...]]:
    """Each row's reference answers (a string, or a list of strings), aligned with its prompts."""
    assert ds.reference_field is not None
    values, where = _field_values(data, ds, ds.reference_field, "referenceField")
    out = []
    for n, value in values:
        refs = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else ()
        if not refs or not all(isinstance(r, str) for r in refs):
            raise DatasetError(
                f"dataset {where} {n}: referenceField {ds.reference_field!r} is not a string or a list of strings"
            )
        out.append(refs)
    return out


def _images(data: bytes, ds: Dataset, storage_endpoint: str | None) -> list[tuple[Image, ...]]:
    """Each row's images (dataset.imageField), read once per distinct reference."""
    assert ds.image_field is not None
    values, where = _field_values(data, ds, ds.image_field, "imageField")
    read: dict[str, Image] = {}
    out = []
    for n, value in values:
        shown = f"dataset {where} {n}: imageField {ds.image_field!r}"
        items = value if isinstance(value, list) else [value]
        if not items or value is None:
            raise DatasetError(f"{shown} is empty; give each row an image (a path, s3:// or data: URL)")
        row = []
        for item in items:
            key = item if isinstance(item, str) else None
            if key is not None and key in read:
                row.append(read[key])
                continue
            try:
                image = image_facts(_image_bytes(item, ds.uri, storage_endpoint, shown), shown)
            except ImageError as err:
                raise DatasetError(str(err)) from None
            if key is not None:
                read[key] = image
            row.append(image)
        out.append(tuple(row))
    return out


def _image_bytes(item: Any, dataset_uri: str, storage_endpoint: str | None, shown: str) -> bytes:
    """An image's bytes: raw, Hugging Face's {bytes, path} struct, a data: URL, s3:// or a path
    (relative ones to the dataset's folder, local or S3)."""
    if isinstance(item, bytes):
        return item
    raw = item.get("bytes") if isinstance(item, dict) else None
    if isinstance(raw, bytes):
        return raw
    if not isinstance(item, str):
        raise DatasetError(f"{shown}: expected a path, s3:// or data: URL, or {{bytes}}; got {type(item).__name__}")
    if item.startswith("data:"):
        try:
            return decode_data_url(item, shown)
        except ImageError as err:
            raise DatasetError(str(err)) from None
    if item.startswith("s3://"):
        return read_s3(item, storage_endpoint, "image")
    if "://" in item:
        raise DatasetError(f"{shown}: {item!r}: the load generator sends image bytes; use a path, s3:// or data: URL")
    if Path(item).is_absolute():
        return read_file(Path(item), f"image {item}")
    folder = dataset_uri.rpartition("/")[0] if "/" in dataset_uri else "."
    if folder.startswith("s3://"):
        return read_s3(f"{folder}/{item}", storage_endpoint, "image")
    if "://" in folder:
        raise DatasetError(f"{shown}: {item!r} is relative, but a {folder.split(':')[0]}:// dataset has no folder; "
                           "use an absolute path, s3:// or data: URL")  # fmt: skip
    return read_file(Path(folder) / item, f"image {item}")


def _text(data: bytes, uri: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"dataset {uri}: not UTF-8 text at byte {exc.start} (a Parquet file? set format: parquet)"
        ) from None


def _max_tokens(obj: dict[str, Any]) -> int | None:
    out = obj.get("max_tokens", obj.get("output_tokens"))
    return out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else None


def _templated(data: bytes, uri: str, fmt: str, template: str) -> list[tuple[str, int | None]]:
    """Each row's prompt made from its fields by ``template`` (FMBench's prompt templates)."""
    if fmt == "parquet":
        objs: list[tuple[int, Any]] = list(enumerate(_parquet_table(data).to_pylist(), 1))
        where = "row"
    else:
        objs, where = list(_jsonl_objects(_text(data, uri))), "line"
    names = template_fields(template)
    rows = []
    for n, obj in objs:
        missing = [k for k in names if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise DatasetError(f"dataset {where} {n}: no field {missing[0]!r} for promptTemplate")
        rows.append((template.format_map({k: obj[k] for k in names}), _max_tokens(obj)))
    return rows


def _jsonl_objects(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"dataset line {n}: not JSON ({exc})") from None


def _parquet_table(data: bytes) -> Any:
    import io

    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise DatasetError(f"dataset: not a Parquet file ({exc})") from None


def parse_jsonl(text: str, field: str) -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []
    for n, obj in _jsonl_objects(text):
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise DatasetError(f"dataset line {n}: expected an object with a string field {field!r}")
        rows.append((obj[field], _max_tokens(obj)))
    return rows


def parse_parquet(data: bytes, field: str) -> list[tuple[str, int | None]]:
    table = _parquet_table(data)
    if field not in table.column_names:
        raise DatasetError(f"dataset: no column {field!r} (columns: {', '.join(table.column_names)}); set promptField")
    prompts = table.column(field).to_pylist()
    budget = next(
        (table.column(c).to_pylist() for c in ("max_tokens", "output_tokens") if c in table.column_names), None
    )
    rows = []
    for n, text in enumerate(prompts, 1):
        if not isinstance(text, str):
            raise DatasetError(f"dataset row {n}: column {field!r} is not a string")
        rows.append((text, _max_tokens({"max_tokens": budget[n - 1]}) if budget is not None else None))
    return rows


_USER = {"human", "user"}


def parse_sharegpt(text: str) -> list[tuple[str, int | None]]:
    """The first user turn of each conversation: a JSON list, or JSONL, of objects holding
    ``conversations`` ([{from, value}], ShareGPT's) or ``messages`` ([{role, content}], OpenAI's)."""
    stripped = text.lstrip()
    try:
        items = (
            json.loads(text) if stripped.startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        )
    except ValueError as exc:
        raise DatasetError(f"dataset: not ShareGPT JSON or JSONL ({exc})") from None
    rows = []
    for n, item in enumerate(items, 1):
        turns = item.get("conversations", item.get("messages")) if isinstance(item, dict) else None
        if not isinstance(turns, list):
            raise DatasetError(f"dataset conversation {n}: expected an object with conversations or messages")
        first = next(
            (
                t.get("value", t.get("content"))
                for t in turns
                if isinstance(t, dict) and t.get("from", t.get("role")) in _USER
            ),
            None,
        )
        if isinstance(first, str) and first.strip():  # conversations that open with the assistant have no prompt
            rows.append((first, _max_tokens(item)))
    return rows


def load_dataset_bytes(uri: str, storage_endpoint: str | None = None) -> bytes:
    """The file behind ``uri`` (an hf:// dataset as JSONL)."""
    if uri.startswith("s3://"):
        return read_s3(uri, storage_endpoint, "dataset")
    if uri.startswith("configmap://"):
        m = CONFIGMAP_URI.match(uri)
        if m is None:
            raise DatasetError(f"invalid dataset URI {uri!r}: use configmap://NAME/KEY")
        path = Path(os.environ.get("FMBENCH_DATASETS_DIR", DATASETS_DIR)) / m["name"] / m["key"]
        return read_file(path, f"dataset {uri} (mounted at {path})")
    if uri.startswith("hf://"):
        return _hf_jsonl(uri.removeprefix("hf://")).encode()
    if "://" in uri:
        raise DatasetError(f"unsupported dataset URI {uri!r}: use a path, s3://, configmap:// or hf://")
    return read_file(Path(uri), f"dataset {uri}")


def read_s3(uri: str, storage_endpoint: str | None, what: str) -> bytes:
    from fmbench_k8s.storage import open_storage

    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or parent in ("s3:/", "s3:"):
        raise DatasetError(f"invalid {what} URI {uri!r}: use s3://BUCKET/KEY")
    try:
        return open_storage(parent, endpoint_url=storage_endpoint).read_bytes(name)
    except Exception as exc:
        raise DatasetError(f"cannot read {what} {uri}: {exc}") from None


def read_file(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {shown}: {exc.strerror}") from None


def _hf_jsonl(name: str) -> str:
    """A Hugging Face dataset's train split as JSONL: from the hub (``hf://ORG/NAME``, network
    needed), or from a local directory (``hf:///path``: one written by ``save_to_disk``, or one of
    data files such as JSONL or Parquet, as a hub dataset is once downloaded)."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"hf://{name} needs the `datasets` package (pip install 'fmbench-k8s[hf]'); the project's image does "
            "not carry it: in a cluster use s3:// or configmap://"
        ) from None
    local = Path(name)
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():  # save_to_disk's
            data: Any = datasets.load_from_disk(str(local))
            data = data["train"] if isinstance(data, datasets.DatasetDict) else data
        else:
            data = datasets.load_dataset(name, split="train")
    except Exception as exc:
        hint = f"cannot read the dataset directory {name}" if local.is_dir() else HF_OFFLINE_MESSAGE
        raise DatasetError(f"{hint} ({type(exc).__name__}: {exc})") from None
    return "\n".join(json.dumps(dict(row), default=str) for row in data)
