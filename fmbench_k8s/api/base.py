"""Building blocks shared by the spec and status models.

The models are the single source of the API: the CRD's OpenAPI schema is generated from them
(``fmbench_k8s.api.crd``), and every cross-field rule is written twice on purpose - once as a
Python validator (offline ``fmbench-k8s validate``, the local runner) and once as a CEL rule that
the API server enforces. ``tests/unit/test_invalid_corpus.py`` runs the same invalid corpus
through both, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from fmbench_k8s import durations

# Kubernetes needs bounded strings and lists to estimate the cost of CEL rules; the bounds are
# generous, and the models enforce the same ones so offline validation agrees with the server.
SHORT = 253
LONG = 2048
MAX_LIST = 64

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Names the API server checks only when the operator creates an object from them; checked here
# (and by the CRD) so that a bad one is refused at `validate`/`kubectl apply`, not late with GPUs
# allocated. The patterns are Kubernetes' own (apimachinery's validation package).
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
NO_SPACE = r"^\S+$"
# What each pattern means, for error messages (a regex is no help to someone fixing a spec).
PATTERN_HELP = {
    DNS_LABEL: "lower-case letters, digits and '-', starting and ending with a letter or digit",
    DNS_1035_LABEL: "lower-case letters, digits and '-', starting with a letter and ending with a letter or digit",
    DNS_SUBDOMAIN: "a Kubernetes object name: lower-case letters, digits, '-' and '.'",
    CONFIG_KEY: "letters, digits, '-', '_' and '.'",
    ENV_NAME: "letters, digits, '-', '_' and '.', not starting with a digit (no '=')",
    LABEL_KEY: "a label key: [prefix/]name, e.g. eks.amazonaws.com/nodegroup",
    LABEL_VALUE: "at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    NO_SPACE: "no spaces or control characters",
}
HTTP_URL = r"^https?://[^\s/$.?#][^\s]*$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """An ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """Strict, camelCase model: unknown fields are errors, the YAML spelling is the field name."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
        frozen=True,
        protected_namespaces=(),
        allow_inf_nan=False,  # every number of a spec is finite; .inf or .nan is a typo, never a setting
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        """CEL rules of this object, mirrored by its Python validators."""
        return []


def _unit_required(value: object) -> object:
    """A bare number is the commonest duration mistake: say which unit to add."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"a duration needs a unit: write {value:g}s (or ms, m, h)")
    return value


def _duration_between(minimum: str, maximum: str) -> AfterValidator:
    lo, hi = durations.parse_duration(minimum), durations.parse_duration(maximum)

    def check(value: str) -> str:
        if not lo <= durations.parse_duration(value) <= hi:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return AfterValidator(check)


def _duration_schema(minimum: str, maximum: str) -> WithJsonSchema:
    rule = f"duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}')"
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": durations.PATTERN,
            "maxLength": 32,
            "description": f"A duration from {minimum} to {maximum}: a number with a unit ms, s, m or h, "
            "e.g. 30s, 2m, 1h30m.",
            "x-kubernetes-validations": [cel(rule, f"must be between {minimum} and {maximum}")],
        }
    )


# Durations are bounded, in the model and by CEL on the API server: a typo (500000h) must not
# become a run nobody can wait for.
_UNIT = BeforeValidator(_unit_required)
PhaseDuration = Annotated[str, _UNIT, _duration_between("0s", "24h"), _duration_schema("0s", "24h")]
StageDuration = Annotated[str, _UNIT, _duration_between("1s", "24h"), _duration_schema("1s", "24h")]
RunDuration = Annotated[str, _UNIT, _duration_between("1s", "168h"), _duration_schema("1s", "168h")]

Name = Annotated[str, Field(min_length=1, max_length=SHORT)]
Text = Annotated[str, Field(min_length=1, max_length=LONG)]
Url = Annotated[str, Field(pattern=HTTP_URL, max_length=LONG)]
ObjectName = Annotated[str, Field(min_length=1, max_length=SHORT, pattern=DNS_SUBDOMAIN)]
ConfigKey = Annotated[str, Field(min_length=1, max_length=SHORT, pattern=CONFIG_KEY)]
EnvName = Annotated[str, Field(min_length=1, max_length=SHORT, pattern=ENV_NAME)]
LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)]  # prefix (253) / name (63)
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
Labels = Annotated[dict[str, LabelValue], Field(max_length=MAX_LIST)]  # keys: checked by the owner's rules


def extra_schema(cls: type[ApiModel]) -> dict[str, Any]:
    """Schema additions of ``cls`` for the CRD: its CEL rules."""
    rules = cls.cel_rules()
    return {"x-kubernetes-validations": rules} if rules else {}
