"""Render docs/api.md, the field reference, from the models (``make docs``; a test checks it is current)."""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from fmbench_k8s.api.base import ApiModel
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.api.status import BenchmarkStatus


def _models_in(annotation: Any) -> list[type[ApiModel]]:
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        base = get_args(annotation)[0]
        meta = get_args(annotation)[1:]
        if any(type(m).__name__ == "WithJsonSchema" for m in meta):
            return "duration"
        return _type_name(base)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "map of string"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        )
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, ApiModel):
            return "see type"
        return f"`{value}`" if value not in ([], {}) else "empty"
    return "" if info.default is None else f"`{info.default}`"


def render() -> str:
    out = [
        "# Benchmark API reference (fmbench.io/v1alpha1)",
        "",
        "Generated from `fmbench_k8s/api` by `make docs`; do not edit by hand. The same models generate the",
        "CRD, so `kubectl explain benchmark.spec` shows these descriptions too. Durations are strings",
        "like `500ms`, `30s`, `2m`, `1h30m`.",
        "",
    ]
    seen: set[type[ApiModel]] = set()
    todo: list[type[ApiModel]] = [BenchmarkSpec, BenchmarkStatus]
    while todo:
        model = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        out += [f"## {model.__name__}", "", (model.__doc__ or "").strip(), ""]
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            alias = info.alias or name
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{alias}` | {_type_name(info.annotation)} | {_default(info)} | {desc} |")
            todo.extend(m for m in _models_in(info.annotation) if m not in seen)
        rules = model.cel_rules()
        if rules:
            out += ["", "Rules (checked offline and by the API server):", ""]
            out += [f"- {r['message']}" for r in rules]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
