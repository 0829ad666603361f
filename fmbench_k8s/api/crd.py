"""Generate the Benchmark CustomResourceDefinition from the pydantic models.

The committed ``crds/fmbench.io_benchmarks.yaml`` is this function's output; a test regenerates it
and fails on any difference, so the API server and offline validation always check the same
schema.
"""

from __future__ import annotations

from typing import Any

import yaml

from fmbench_k8s.api.base import DNS_1035_LABEL, PATTERN_HELP, ApiModel, cel
from fmbench_k8s.api.benchmark import GROUP, KIND, PLURAL, VERSION
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.api.status import BenchmarkStatus

# JSON-Schema keywords the Kubernetes structural schema keeps as they are.
_KEEP = {
    "type", "description", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "minProperties", "maxProperties", "default", "format",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def _model_classes() -> dict[str, type[ApiModel]]:
    found: dict[str, type[ApiModel]] = {}
    todo: list[type[ApiModel]] = [ApiModel]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _convert(node: dict[str, Any], defs: dict[str, Any], classes: dict[str, type[ApiModel]]) -> dict[str, Any]:
    """JSON Schema (pydantic's) → OpenAPI v3 structural schema, inlining $refs."""
    if "$ref" in node:
        return _convert_ref(node, defs, classes)
    if "anyOf" in node:  # Optional[X]: absent in YAML rather than null
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        return _convert({**options[0], **rest}, defs, classes)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "items", "additionalProperties"):
            _convert_nested(out, key, value, defs, classes)
        elif key in _RENAMED:
            out.update(_RENAMED[key](value))
        elif key == "default" and isinstance(value, (dict, list)):
            continue  # object defaults are applied by the models; keep the schema's defaults scalar
        elif key in _KEEP:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _convert_ref(node: dict[str, Any], defs: dict[str, Any], classes: dict[str, type[ApiModel]]) -> dict[str, Any]:
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    converted = _convert(merged, defs, classes)
    rules = classes[name].cel_rules() if name in classes else []
    if rules:
        converted["x-kubernetes-validations"] = rules
    return converted


def _convert_nested(
    out: dict[str, Any], key: str, value: Any, defs: dict[str, Any], classes: dict[str, type[ApiModel]]
) -> None:
    if key == "properties":
        out[key] = {k: _convert(v, defs, classes) for k, v in value.items()}
    elif isinstance(value, dict):  # items, or additionalProperties given as a schema (not a bool)
        out[key] = _convert(value, defs, classes)


# Keywords whose OpenAPI v3.0 form differs: exclusive bounds are a boolean flag beside the bound.
_RENAMED: dict[str, Any] = {
    "required": lambda value: {"required": sorted(value)},
    "exclusiveMinimum": lambda value: {"minimum": value, "exclusiveMinimum": True},
    "exclusiveMaximum": lambda value: {"maximum": value, "exclusiveMaximum": True},
    "const": lambda value: {"enum": [value]},
}


def object_schema(model: type[ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _convert(raw, raw.get("$defs", {}), _model_classes())
    rules = model.cel_rules()
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def build_crd() -> dict[str, Any]:
    spec = object_schema(BenchmarkSpec)
    status = object_schema(BenchmarkStatus)
    status["description"] = "Observed state, written by the operator only."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["fmb"],
                "categories": ["fmbench", "all"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Recommendation", "type": "string", "jsonPath": ".status.recommendation.variant"},
                        {"name": "Type", "type": "string", "jsonPath": ".status.recommendation.instanceType"},
                        {"name": "Instances", "type": "integer", "jsonPath": ".status.recommendation.instances"},
                        {
                            "name": "$/1k req",
                            "type": "number",
                            "jsonPath": ".status.recommendation.costPer1kRequests",
                        },
                        {"name": "Verified", "type": "string", "jsonPath": ".status.verification.verdict"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Benchmark finds the cheapest instance type T and count N that serve "
                            "a workload W = {R, P, G} under a latency objective L.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                cel(
                                    f"self.metadata.name.matches('{DNS_1035_LABEL}')",
                                    f"metadata.name: must be {PATTERN_HELP[DNS_1035_LABEL]} (it names Services)",
                                )
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `fmbench-k8s crd` from fmbench_k8s/api; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
