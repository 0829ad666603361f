"""Validation errors as one line each that says what to write instead.

pydantic's own wording ("Input should be a valid dictionary or instance of Levels") names a type,
not a fix. ``explain`` turns each error into the field's path in the YAML's spelling and a message
with the fix: the unit a number is in, the shape a mapping takes, the nearest known name.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from fmbench_k8s import durations
from fmbench_k8s.api.base import PATTERN_HELP

# Cross-field validators prefix their message with the field they are about ("engine: ...").
_FIELD_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:[./][A-Za-z][A-Za-z0-9]*)?): (.*)$", re.S)
_QUOTED = re.compile(r"'([^']*)'")
# The shape of each object a user may write as a scalar or a list by mistake.
_SHAPES = {
    "Levels": "{levels: [1, 2, 4]} (run these) or {min: 1, max: 64} (a range)",
    "TokenDistribution": "{mean: 256} or {mean: 256, stddev: 32, min: 16, max: 512}",
    "LatencySlo": "{metric: e2e, percentile: 95, maxSeconds: 2.0}",
    "ModelRef": "{name: meta-llama/Llama-3.1-8B-Instruct}",
    "SecretKeyRef": "{name: my-secret, key: token}",
}


def _path_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: object, options: list[str]) -> str:
    """``; did you mean 'x'?`` for the option closest to ``word``, or nothing."""
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if not close and isinstance(word, str):
        close = [o for o in options if o.lower() == word.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the last element of ``loc`` (list indexes skipped)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType, typing.Annotated) or args:
        for arg in args:
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _fields(model: type[BaseModel] | None) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()] if model is not None else []


def _number(e: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    given = e["input"]
    if isinstance(given, str):
        try:
            seconds = durations.parse_duration(given)
        except ValueError:
            pass
        else:
            if str(loc[-1]).lower().endswith("seconds"):
                return f"a number of seconds: write {seconds:g} for {given}"
            return f"a plain number, not a duration: got {given!r}"
    return f"must be a number, got {given!r}"


def explain(e: ErrorDetails, root: type[BaseModel]) -> tuple[str, str]:
    """(path, message) of one pydantic error, the message saying what to write."""
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = e["msg"].removeprefix("Value error, ")
    kind = e["type"]
    ctx = e.get("ctx") or {}
    m = _FIELD_PREFIX.match(msg)
    if kind == "value_error" and m:
        loc, msg = (*loc, m.group(1)), m.group(2)
    elif kind == "extra_forbidden":
        msg = "unknown field" + (did_you_mean(loc[-1], _fields(_model_at(root, loc))) or "; see docs/api.md")
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        options = _QUOTED.findall(str(ctx.get("expected", "")))
        msg = f"must be one of {', '.join(options)}, got {e['input']!r}{did_you_mean(e['input'], options)}"
    elif kind in ("float_parsing", "int_parsing", "float_type", "int_type"):
        msg = _number(e, loc)
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        shape = _SHAPES.get(str(ctx.get("class_name", "")))
        msg = f"write a mapping: {shape}" if shape else f"must be a mapping, got {e['input']!r}"
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_HELP:
        msg = f"must be {PATTERN_HELP[str(ctx['pattern'])]}, got {e['input']!r}"
    return _path_of(loc), msg
