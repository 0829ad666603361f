"""The Benchmark spec: the whole experiment, as users write it (see docs/api.md)."""

from __future__ import annotations

import itertools
import json
import re
import string
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from fmbench_k8s.api.base import (
    CONFIG_KEY,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LABEL_KEY,
    LONG,
    MAX_LIST,
    NO_SPACE,
    ApiModel,
    ConfigKey,
    EnvName,
    LabelKey,
    Labels,
    LabelValue,
    Name,
    ObjectName,
    PhaseDuration,
    RunDuration,
    StageDuration,
    Text,
    Url,
    cel,
)
from fmbench_k8s.api.messages import did_you_mean
from fmbench_k8s.durations import parse_duration

REVISION = r"^[A-Za-z0-9][-A-Za-z0-9._/]*$"  # a branch, tag or commit: it becomes a server flag
SHORT_REF = 255

Engine = Literal["vllm", "tgi", "triton-trtllm", "neuronx-vllm", "djl-lmi", "sglang", "simulator"]
ENGINES: tuple[str, ...] = Engine.__args__  # type: ignore[attr-defined]
EndpointApi = Literal["openai-chat", "openai-completions", "tgi", "triton", "sagemaker", "bedrock"]
HTTP_APIS = ("openai-chat", "openai-completions", "tgi", "triton")
# The instance types the built-in simulator imitates (fmbench_k8s/simulator/profiles.py keys its
# illustrative profiles by exactly these; a unit test keeps the two equal).
SIMULATED_INSTANCE_TYPES = (
    "g5.2xlarge", "g5.12xlarge", "g6.2xlarge", "g6e.2xlarge", "p4d.24xlarge", "p5.48xlarge", "inf2.8xlarge",
    "inf2.48xlarge", "trn1.32xlarge", "m5.xlarge",
)  # fmt: skip
_SIMULATED = "the simulator imitates only " + ", ".join(SIMULATED_INSTANCE_TYPES)
MAX_LEVEL = 1_000_000  # concurrent users or requests/s: far beyond one load test, still a sane int
LatencyMetric = Literal["e2e", "ttft", "tpot", "itl"]
LoadMode = Literal["search", "sweep", "fixed"]
Arrival = Literal["closed", "poisson", "constant", "trace"]
CleanupPolicy = Literal["Always", "OnSuccess", "Never"]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the Benchmark's namespace; only the reference is ever read by us."""

    name: ObjectName = Field(description="Secret name.")
    key: ConfigKey = Field(default="token", description="Key inside the Secret.")


class ModelCache(ApiModel):
    """Where model servers keep what they download and compile between runs."""

    claim_name: ObjectName = Field(
        description="PersistentVolumeClaim of the Benchmark's namespace, mounted read-write at /model-cache "
        "(ReadWriteMany, e.g. EFS or FSx for Lustre, when replicas or variants share it)."
    )


class ModelRef(ApiModel):
    """The model to serve (a Hugging Face id or a path the engine understands)."""

    name: Text = Field(description="Model id, e.g. meta-llama/Llama-3.1-8B-Instruct.")
    revision: Annotated[str, Field(max_length=SHORT_REF, pattern=REVISION)] | None = Field(
        default=None, description="Model revision (branch, tag or commit)."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a Hugging Face token, passed to the model server as HF_TOKEN."
    )
    cache: ModelCache | None = Field(
        default=None,
        description="Keep weights (and Neuron's compiled graphs) between runs; without it every run downloads them.",
    )


def metrics_url_of(url: str) -> str:
    """A server's Prometheus endpoint by convention: ``/metrics`` at the root of its URL's host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


# Request-body fields the load generator sets itself: the workload decides them.
LOADGEN_BODY_KEYS = (
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
)
MAX_EXTRA_VALUE_BYTES = 2048


class BodyField(ApiModel):
    """One more field of the request body (as env is a list of name/value pairs)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_SPACE)] = Field(description="JSON key.")
    value: Any = Field(
        description="Any JSON value: a number, string, boolean, list or object.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @field_validator("value")
    @classmethod
    def _small(cls, value: Any) -> Any:
        if len(json.dumps(value)) > MAX_EXTRA_VALUE_BYTES:
            raise ValueError(f"at most {MAX_EXTRA_VALUE_BYTES} bytes of JSON")
        return value


class RequestParams(ApiModel):
    """Parameters sent with every request to an OpenAI-compatible endpoint."""

    ignore_eos: bool | None = Field(
        default=None,
        description="Ask for exactly max_tokens (vLLM, SGLang honour it), so output lengths are the workload's. "
        "Default: true when endpoint.engine honours it, else false.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling probability mass.")
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=8, description="Stop sequences."
    )
    extra_body: list[BodyField] = Field(
        default_factory=list,
        max_length=16,
        description="More request-body fields, e.g. [{name: top_k, value: 20}, {name: chat_template_kwargs, "
        "value: {enable_thinking: false}}]; not the ones the workload sets (" + ", ".join(LOADGEN_BODY_KEYS) + ").",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("extra_body")
    @classmethod
    def _not_the_workloads(cls, fields: list[BodyField]) -> list[BodyField]:
        names = [f.name for f in fields]
        owned = sorted(set(names) & set(LOADGEN_BODY_KEYS))
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by the workload, not here (promptTokens, outputTokens)")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)}: given more than once")
        return fields

    def body(self, *, exact_by_default: bool = False) -> dict[str, object]:
        """The request-body fields these parameters add; ``exact_by_default``: the engine behind
        the endpoint honours ignore_eos."""
        exact = exact_by_default if self.ignore_eos is None else self.ignore_eos
        out: dict[str, object] = {f.name: f.value for f in self.extra_body}
        if exact:
            out["ignore_eos"] = True
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.top_p is not None:
            out["top_p"] = self.top_p
        if self.stop:
            out["stop"] = list(self.stop)
        return out

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        owned = ", ".join(f"'{k}'" for k in LOADGEN_BODY_KEYS)
        return [
            cel(
                f"!has(self.extraBody) || self.extraBody.all(f, !(f.name in [{owned}]))",
                "extraBody: " + ", ".join(LOADGEN_BODY_KEYS) + " are set by the workload, not here",
                ".extraBody",
            )
        ]


class Endpoint(ApiModel):
    """An existing endpoint to benchmark; nothing is deployed for it."""

    api: EndpointApi = Field(description="Wire API of the endpoint.")
    url: Url | None = Field(
        default=None,
        description="Base URL (http or https). Required for openai-chat, openai-completions, tgi and triton; "
        "for OpenAI APIs include the /v1 suffix.",
    )
    model: Text | None = Field(
        default=None, description="Model name sent in requests (OpenAI `model`, Triton model name)."
    )
    model_id: Text | None = Field(default=None, description="Bedrock model id. Required for api bedrock.")
    endpoint_name: Name | None = Field(default=None, description="SageMaker endpoint name. Required for api sagemaker.")
    payload: Literal["openai-chat", "tgi", "lmi"] = Field(
        default="tgi", description="Request/response format of a SageMaker endpoint's container."
    )
    region: Name | None = Field(default=None, description="AWS region of a SageMaker or Bedrock endpoint.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret with a bearer token sent as the Authorization header."
    )
    metrics_url: Url | None = Field(
        default=None,
        description="The server's Prometheus metrics, scraped by a local run and in a cluster (a ScrapeConfig) "
        "so its queue, KV cache and timers reach the report. Default for HTTP APIs: <scheme>://<host:port>/metrics "
        "of url.",
    )
    scrape_metrics: bool = Field(default=True, description="false: do not scrape the endpoint's metrics.")
    engine: Engine | None = Field(
        default=None,
        description="The engine behind the endpoint, when known: ignoreEos is sent by default where it honours "
        "it (vllm, sglang), and the report names it.",
    )
    request: RequestParams | None = Field(
        default=None, description="Parameters sent with every request (openai-chat and openai-completions)."
    )

    @property
    def metrics_target(self) -> str | None:
        """The URL to scrape, or None (switched off, or an AWS API without one)."""
        if not self.scrape_metrics:
            return None
        if self.metrics_url is not None:
            return self.metrics_url
        if self.url is None or self.api not in HTTP_APIS:
            return None
        return metrics_url_of(self.url)

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "!(self.api in ['openai-chat', 'openai-completions', 'tgi', 'triton']) || has(self.url)",
                "url: required for api openai-chat, openai-completions, tgi and triton",
                ".url",
            ),
            cel("self.api != 'bedrock' || has(self.modelId)", "modelId: required for api bedrock", ".modelId"),
            cel(
                "!has(self.request) || self.api in ['openai-chat', 'openai-completions']",
                "request: only for api openai-chat and openai-completions",
                ".request",
            ),
            cel(
                "self.api != 'sagemaker' || has(self.endpointName)",
                "endpointName: required for api sagemaker",
                ".endpointName",
            ),
            cel(
                "self.api != 'triton' || has(self.model)",
                "model: required for api triton (the Triton model name)",
                ".model",
            ),
        ]

    @model_validator(mode="after")
    def _required_per_api(self) -> Endpoint:
        if self.api in HTTP_APIS and self.url is None:
            raise ValueError("url: required for api openai-chat, openai-completions, tgi and triton")
        if self.api == "bedrock" and self.model_id is None:
            raise ValueError("modelId: required for api bedrock")
        if self.api == "sagemaker" and self.endpoint_name is None:
            raise ValueError("endpointName: required for api sagemaker")
        if self.api == "triton" and self.model is None:
            raise ValueError("model: required for api triton (the Triton model name)")
        if self.request is not None and self.api not in ("openai-chat", "openai-completions"):
            raise ValueError("request: only for api openai-chat and openai-completions")
        return self


class EnvVar(ApiModel):
    """An environment variable for the model server container."""

    name: EnvName = Field(description="Variable name (letters, digits, '-', '.', '_'; not starting with a digit).")
    value: Annotated[str, Field(max_length=4096)] = Field(default="", description="Value.")


# Taints and labels that keep pods off control-plane and unhealthy nodes, and the label the price
# is taken from (spec.instanceType says it): a Benchmark may not select or tolerate its way past them.
RESERVED_PREFIXES = ("node-role.kubernetes.io/", "node.kubernetes.io/")
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
_RESERVED_TAINT = (
    "key: model servers may not tolerate node-role.kubernetes.io/* or node.kubernetes.io/* taints "
    "(control-plane and unhealthy nodes); name your node group's own taint"
)
_NO_WILDCARD = "key: required; a toleration without a key tolerates every taint, control-plane ones included"
_EXISTS_VALUE = "value: must be empty with operator Exists (or use operator Equal)"
_RESERVED_SELECTOR = (
    "nodeSelector: node-role.kubernetes.io/* keys are refused (control-plane nodes), and the instance-type "
    "label is set from instanceType; select your node group with its own label, e.g. eks.amazonaws.com/nodegroup"
)
_SELECTOR_KEYS = "nodeSelector: keys must be label keys ([prefix/]name, e.g. eks.amazonaws.com/nodegroup)"


def _cel_any_prefix(var: str, prefixes: tuple[str, ...]) -> str:
    return " || ".join(f"{var}.startsWith('{p}')" for p in prefixes)


class Toleration(ApiModel):
    """A toleration added to the model server pods (GPU/Neuron taints are tolerated already)."""

    key: LabelKey | None = Field(default=None, description="Taint key (required).")
    operator: Literal["Equal", "Exists"] = Field(default="Equal", description="Equal or Exists.")
    value: LabelValue | None = Field(default=None, description="Taint value (empty with Exists).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all."
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel("has(self.key)", _NO_WILDCARD, ".key"),
            cel(f"!has(self.key) || !({_cel_any_prefix('self.key', RESERVED_PREFIXES)})", _RESERVED_TAINT, ".key"),
            cel("self.operator != 'Exists' || !has(self.value)", _EXISTS_VALUE, ".value"),
        ]

    @model_validator(mode="after")
    def _narrow(self) -> Toleration:
        if self.key is None:
            raise ValueError(_NO_WILDCARD)
        if self.key.startswith(RESERVED_PREFIXES):
            raise ValueError(_RESERVED_TAINT)
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(_EXISTS_VALUE)
        return self


class Variant(ApiModel):
    """One deployment under test (`engine` + `instanceType`) or one existing `endpoint`."""

    name: Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=40)] = Field(
        description="Unique name (DNS label, at most 40 characters: it prefixes child object names)."
    )
    instance_type: Name | None = Field(
        default=None,
        description="EC2 instance type (node.kubernetes.io/instance-type). Drives the price, the scheduling "
        "and, for engine simulator, the simulated profile. Required with engine.",
    )
    engine: Engine | None = Field(default=None, description="Serving stack to deploy.")
    endpoint: Endpoint | None = Field(default=None, description="An existing endpoint to use instead of deploying.")
    image: Annotated[str, Field(min_length=1, max_length=LONG, pattern=NO_SPACE)] | None = Field(
        default=None, description="Container image; defaulted per engine."
    )
    accelerators: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="GPUs (nvidia.com/gpu) or Neuron devices (aws.amazon.com/neuron) per replica; "
        "defaults to all the instance type has.",
    )
    replicas: int = Field(default=1, ge=1, le=256, description="Model server replicas (instances) under test.")
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=MAX_LIST, description="Extra model server arguments."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_LIST, description="Extra environment.")
    model: ModelRef | None = Field(default=None, description="Model override for this variant.")
    price_per_hour: float | None = Field(
        default=None, gt=0, le=10_000, description="USD per instance-hour; overrides the price table."
    )
    node_selector: Labels = Field(
        default_factory=dict, description="Extra node labels to select (e.g. eks.amazonaws.com/nodegroup)."
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_LIST, description="Extra tolerations.")

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "has(self.engine) != has(self.endpoint)",
                "engine: set exactly one of engine (deploy a model server) or endpoint (use an existing one)",
                ".engine",
            ),
            cel(
                "!has(self.engine) || has(self.instanceType)",
                "instanceType: required with engine (e.g. g6e.2xlarge)",
                ".instanceType",
            ),
            cel(
                "!has(self.engine) || self.engine != 'simulator' || "
                f"self.instanceType in {list(SIMULATED_INSTANCE_TYPES)}",
                f"instanceType: {_SIMULATED}",
                ".instanceType",
            ),
            cel(
                f"!has(self.nodeSelector) || self.nodeSelector.all(k, k.matches(r'{LABEL_KEY}'))",
                _SELECTOR_KEYS,
                ".nodeSelector",
            ),
            cel(
                "!has(self.nodeSelector) || !self.nodeSelector.exists(k, "
                f"{_cel_any_prefix('k', RESERVED_PREFIXES[:1])} || k in {list(INSTANCE_TYPE_LABELS)})",
                _RESERVED_SELECTOR,
                ".nodeSelector",
            ),
        ]

    @model_validator(mode="after")
    def _engine_xor_endpoint(self) -> Variant:
        if (self.engine is None) == (self.endpoint is None):
            raise ValueError(
                "engine: set exactly one of engine (deploy a model server) or endpoint (use an existing one)"
            )
        if self.engine is not None and self.instance_type is None:
            raise ValueError("instanceType: required with engine (e.g. g6e.2xlarge)")
        if self.engine == "simulator" and self.instance_type not in SIMULATED_INSTANCE_TYPES:
            raise ValueError(
                f"instanceType: {_SIMULATED}{did_you_mean(self.instance_type, [*SIMULATED_INSTANCE_TYPES])}"
            )
        if not all(re.match(LABEL_KEY, k) for k in self.node_selector):
            raise ValueError(_SELECTOR_KEYS)
        if any(k.startswith(RESERVED_PREFIXES[:1]) or k in INSTANCE_TYPE_LABELS for k in self.node_selector):
            raise ValueError(_RESERVED_SELECTOR)
        return self


class TokenDistribution(ApiModel):
    """A token count distribution: normal with mean and stddev, clipped to [min, max]."""

    mean: int = Field(gt=0, le=1_000_000, description="Mean tokens.")
    stddev: float = Field(default=0, ge=0, description="Standard deviation in tokens (0: every request the same).")
    min: int | None = Field(default=None, gt=0, description="Lower clip.")
    max: int | None = Field(default=None, gt=0, description="Upper clip.")

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min: must be <= max", ".min")]

    @model_validator(mode="after")
    def _min_le_max(self) -> TokenDistribution:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: must be <= max")
        return self


CONFIGMAP_URI = re.compile(
    r"^configmap://(?P<name>" + DNS_SUBDOMAIN.strip("^$") + r")/(?P<key>" + CONFIG_KEY.strip("^$") + r")$"
)


LONGBENCH_TEMPLATE = "{context}\n\n{input}"


def template_fields(template: str) -> list[str]:
    """The row fields a prompt template names, or ValueError saying what is wrong with it."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"promptTemplate: {err}; write {{{{ and }}}} for literal braces") from None
    if not names:
        raise ValueError("promptTemplate: names no field; write {field} where a row's field goes")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise ValueError(f"promptTemplate: {{{bad[0]}}} is not a field name; write {{field}} with a row's field name")
    return names


_IMAGE_FIELD_FORMAT = "imageField: only jsonl and parquet rows name their images; set format: jsonl or parquet"


class Dataset(ApiModel):
    """Prompts from a JSONL file (local path, s3://, configmap://NAME/KEY or hf://DATASET)."""

    uri: Text = Field(
        description="Where the JSONL lives. configmap://NAME/KEY: a ConfigMap of the Benchmark's namespace, "
        "mounted into the load generators by the operator."
    )
    prompt_field: Name = Field(default="prompt", description="Field holding the prompt text (jsonl, parquet).")
    format: Literal["jsonl", "parquet", "sharegpt", "longbench"] = Field(
        default="jsonl",
        description="jsonl: one object per line; parquet: a table with a string column promptField; sharegpt: "
        "conversations (a JSON list or JSONL of objects with conversations [{from, value}] or messages "
        "[{role, content}]), whose first user turn is the prompt; longbench: LongBench's JSONL records, the prompt "
        "made of their context and input. Rows may give max_tokens or output_tokens.",
    )
    prompt_template: Annotated[str, Field(min_length=3, max_length=4096)] | None = Field(
        default=None,
        description="The prompt made from each row's fields (jsonl, parquet, longbench), as FMBench's prompt "
        "templates: {name} takes the row's field name, e.g. 'Read this: {context} Then answer: {input}'. Default: "
        "the promptField alone; longbench: '{context}' and '{input}' on lines of their own.",
    )
    sample: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Use this many rows, drawn without replacement (workload.seed)."
    )
    reference_field: Name | None = Field(
        default=None,
        description="Field (column) with each row's reference answer: a string, or a list of acceptable answers "
        "(LongBench's answers). spec.evaluation scores the answers against it (docs/accuracy.md). jsonl, parquet "
        "and longbench.",
    )
    image_field: Name | None = Field(
        default=None,
        description="Field (column) with each row's image(s), sent with its prompt: a path (relative to the "
        "dataset's folder), s3://BUCKET/KEY, a data: URL, or Hugging Face's image struct {bytes}; or a list of them. "
        "PNG or JPEG. jsonl and parquet.",
    )

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, template: str | None) -> str | None:
        if template is not None:
            template_fields(template)
        return template

    @field_validator("uri")
    @classmethod
    def _configmap_uri(cls, uri: str) -> str:
        if uri.startswith("configmap://") and not CONFIGMAP_URI.match(uri):
            raise ValueError("use configmap://NAME/KEY: a ConfigMap name (DNS subdomain) and one of its keys")
        return uri

    @property
    def configmap(self) -> tuple[str, str] | None:
        """(ConfigMap name, key) of a configmap:// dataset."""
        m = CONFIGMAP_URI.match(self.uri)
        return (m["name"], m["key"]) if m else None

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "!self.uri.startsWith('configmap://') || self.uri.matches(r'" + CONFIGMAP_URI.pattern + "')",
                "uri: use configmap://NAME/KEY: a ConfigMap name (DNS subdomain) and one of its keys",
                ".uri",
            ),
            cel(
                "!has(self.imageField) || !has(self.format) || self.format in ['jsonl', 'parquet']",
                _IMAGE_FIELD_FORMAT,
                ".imageField",
            ),
        ]

    @model_validator(mode="after")
    def _images_in_rows(self) -> Dataset:
        if self.image_field is not None and self.format not in ("jsonl", "parquet"):
            raise ValueError(_IMAGE_FIELD_FORMAT)
        return self


MAX_BUCKETS = 16
_SHARES = "buckets: the shares add up to {total:g}; make them add up to 1"


class PromptBucket(ApiModel):
    """A class of prompts by length (FMBench's payload files): token range, output length, share."""

    name: Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=40)] = Field(
        description="Bucket name (lowercase letters, digits, '-'), shown in the report."
    )
    min_tokens: int = Field(ge=1, le=1_000_000, description="Shortest prompt of the bucket, tokens (inclusive).")
    max_tokens: int = Field(ge=1, le=1_000_000, description="Longest prompt of the bucket, tokens (inclusive).")
    share: float = Field(gt=0, le=1, description="Share of the requests in this bucket; the shares add up to 1.")
    output_tokens: TokenDistribution | None = Field(
        default=None, description="G of this bucket's requests (default: workload.outputTokens)."
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [cel("self.minTokens <= self.maxTokens", "minTokens: must be <= maxTokens", ".minTokens")]

    @model_validator(mode="after")
    def _range(self) -> PromptBucket:
        if self.min_tokens > self.max_tokens:
            raise ValueError("minTokens: must be <= maxTokens")
        return self


class Trace(ApiModel):
    """A timestamped request trace to replay (load.arrival: trace): its arrivals and each request's
    prompt and output lengths (docs/workloads.md)."""

    uri: Text = Field(description="Where the trace lives: a local path or s3://BUCKET/KEY.")
    format: Literal["azure", "mooncake"] = Field(
        description="azure: the Azure LLM inference trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens); "
        "mooncake: Mooncake's JSONL (timestamp in ms, input_length, output_length)."
    )


class SharedPrefix(ApiModel):
    """Synthetic prompts that open with one of a few shared prefixes (a system prompt, a document),
    as applications send them: what a server's prefix cache serves (docs/workloads.md)."""

    prefixes: int = Field(
        ge=1, le=10_000, description="Distinct prefixes; each request opens with one, drawn uniformly."
    )
    tokens: int = Field(ge=1, le=1_000_000, description="Length of each prefix, tokens.")


class Conversation(ApiModel):
    """Multi-turn sessions: each request is the next turn of a conversation and carries its
    history (docs/workloads.md)."""

    turns: int = Field(ge=2, le=100, description="User turns per conversation; then a new one starts.")


class ImageSize(ApiModel):
    """One size of synthetic image (workload.images), drawn by share."""

    name: Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=40)] = Field(
        description="Size name (lowercase letters, digits, '-'), shown in the report."
    )
    width: int = Field(ge=16, le=8192, description="Width, pixels.")
    height: int = Field(ge=16, le=8192, description="Height, pixels.")
    share: float = Field(gt=0, le=1, description="Share of the requests whose images have this size; they add up to 1.")


MAX_IMAGE_SIZES = 16
_IMAGE_SHARES = "sizes: the shares add up to {total:g}; make them add up to 1"
# The engines whose API carries no images (contract/engines.py: their api is not openai-chat;
# tests/unit/test_images.py holds the two lists together).
TEXT_ONLY_ENGINES: Final = ("tgi", "triton-trtllm")
IMAGE_APIS: Final = ("openai-chat", "bedrock")


class Images(ApiModel):
    """Synthetic images sent with every prompt, to vision chat APIs (openai-chat content parts,
    Bedrock converse image blocks): PNGs of the given sizes, unique per request (docs/workloads.md)."""

    per_prompt: int = Field(default=1, ge=1, le=8, description="Images per prompt, all of the size drawn for it.")
    sizes: list[ImageSize] = Field(
        min_length=1,
        max_length=MAX_IMAGE_SIZES,
        description="Image sizes, each prompt's drawn by share; the report splits each stage by size.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "self.sizes.map(s, s.share).sum() > 0.999 && self.sizes.map(s, s.share).sum() < 1.001",
                "sizes: the shares must add up to 1",
                ".sizes",
            )
        ]

    @model_validator(mode="after")
    def _shares(self) -> Images:
        names = [s.name for s in self.sizes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sizes: names must be unique; repeated: {', '.join(repeated)}")
        total = sum(s.share for s in self.sizes)
        if not 0.999 < total < 1.001:
            raise ValueError(_IMAGE_SHARES.format(total=total))
        return self


_IMAGES_OR_FIELD = "images: the dataset's rows bring their own images (dataset.imageField); remove one of the two"
_IMAGES_IN_CONVERSATION = (
    "conversation: earlier turns would be sent without their images; remove conversation, or images and "
    "dataset.imageField"
)


class Workload(ApiModel):
    """W = {R, P, G}: the traffic to size for."""

    requests_per_minute: float = Field(
        gt=0, le=10_000_000, description="R: requests per minute to serve (at most 10 million)."
    )
    prompt_tokens: TokenDistribution | None = Field(
        default=None,
        description="P: prompt length in tokens. Required unless buckets are given. With a dataset or a trace, "
        "their typical length: the plan and the report state it, the requests use their own.",
    )
    output_tokens: TokenDistribution = Field(description="G: generated tokens per request (max_tokens).")
    buckets: list[PromptBucket] = Field(
        default_factory=list,
        max_length=MAX_BUCKETS,
        description="Prompt-length buckets (FMBench's payload files): each request falls in one, drawn by share; "
        "synthetic prompts take a length in the bucket's range, dataset prompts are sorted into buckets by their "
        "token count. Ranges do not overlap; names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    tokenizer: Text | None = Field(
        default=None,
        description="tokenizer.json that counts dataset prompts into buckets: a path, s3://BUCKET/KEY or "
        "hf://MODEL (the model repository's tokenizer.json; hf:///local/dir reads a downloaded one). Without it a "
        "prompt's tokens are its whitespace-separated words.",
    )
    dataset: Dataset | None = Field(default=None, description="Real prompts instead of synthetic ones.")
    trace: Trace | None = Field(
        default=None,
        description="Arrivals and per-request lengths from a trace (with load.arrival: trace); synthetic prompts of "
        "each request's length. Not with buckets or a dataset.",
    )
    shared_prefix: SharedPrefix | None = Field(
        default=None,
        description="Synthetic prompts open with one of these shared prefixes, then their own promptTokens (or "
        "bucket) words: P is the prefix plus that. Not with a dataset or a trace.",
    )
    conversation: Conversation | None = Field(
        default=None,
        description="Multi-turn conversations: a request is a conversation's next user turn (from promptTokens, "
        "buckets or the dataset) sent with every earlier turn and answer. Not with a trace.",
    )
    images: Images | None = Field(
        default=None,
        description="Synthetic images sent with every prompt (vision models; api openai-chat or bedrock). For a "
        "dataset's own images use dataset.imageField.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of synthetic prompts and arrival schedules.")

    @property
    def has_images(self) -> bool:
        """Prompts carry images: synthetic ones, or the dataset's."""
        return self.images is not None or (self.dataset is not None and self.dataset.image_field is not None)

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "!has(self.images) || !has(self.dataset) || !has(self.dataset.imageField)",
                _IMAGES_OR_FIELD,
                ".images",
            ),
            cel(
                "!has(self.conversation) || (!has(self.images) && (!has(self.dataset) || "
                "!has(self.dataset.imageField)))",
                _IMAGES_IN_CONVERSATION,
                ".conversation",
            ),
            cel(
                "!has(self.conversation) || !has(self.trace)",
                "conversation: a trace gives every request's length; remove conversation or trace",
                ".conversation",
            ),
            cel(
                "!has(self.sharedPrefix) || (!has(self.dataset) && !has(self.trace))",
                "sharedPrefix: shared prefixes open synthetic prompts; remove dataset and trace",
                ".sharedPrefix",
            ),
            cel(
                "has(self.promptTokens) || (has(self.buckets) && size(self.buckets) > 0)",
                "promptTokens: required unless buckets are given",
                ".promptTokens",
            ),
            cel(
                "!has(self.trace) || (!has(self.dataset) && (!has(self.buckets) || size(self.buckets) == 0))",
                "trace: a trace gives every request's lengths; remove dataset and buckets",
                ".trace",
            ),
            cel(
                "!has(self.buckets) || size(self.buckets) == 0 || "
                "(self.buckets.map(b, b.share).sum() > 0.999 && self.buckets.map(b, b.share).sum() < 1.001)",
                "buckets: the shares must add up to 1",
                ".buckets",
            ),
            cel(
                "!has(self.buckets) || self.buckets.all(a, self.buckets.all(b, a.name == b.name || "
                "a.maxTokens < b.minTokens || b.maxTokens < a.minTokens))",
                "buckets: token ranges must not overlap (a prompt belongs to one bucket)",
                ".buckets",
            ),
            cel(
                "!has(self.tokenizer) || !self.tokenizer.startsWith('configmap://')",
                "tokenizer: a tokenizer.json is usually larger than a ConfigMap holds (1 MiB); use s3:// or hf://",
                ".tokenizer",
            ),
        ]

    @model_validator(mode="after")
    def _buckets(self) -> Workload:
        if self.prompt_tokens is None and not self.buckets:
            raise ValueError("promptTokens: required unless buckets are given")
        if self.conversation is not None and self.trace is not None:
            raise ValueError("conversation: a trace gives every request's length; remove conversation or trace")
        if self.shared_prefix is not None and (self.dataset is not None or self.trace is not None):
            raise ValueError("sharedPrefix: shared prefixes open synthetic prompts; remove dataset and trace")
        if self.trace is not None and (self.dataset is not None or self.buckets):
            raise ValueError("trace: a trace gives every request's lengths; remove dataset and buckets")
        if self.buckets:
            names = [b.name for b in self.buckets]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"buckets: names must be unique; repeated: {', '.join(repeated)}")
            total = sum(b.share for b in self.buckets)
            if not 0.999 < total < 1.001:
                raise ValueError(_SHARES.format(total=total))
            ordered = sorted(self.buckets, key=lambda b: b.min_tokens)
            for a, b in itertools.pairwise(ordered):
                if b.min_tokens <= a.max_tokens:
                    raise ValueError(
                        f"buckets: {a.name} ({a.min_tokens}-{a.max_tokens}) and {b.name} ({b.min_tokens}-"
                        f"{b.max_tokens}) overlap; a prompt belongs to one bucket"
                    )
        if self.tokenizer is not None and self.tokenizer.startswith("configmap://"):
            raise ValueError(
                "tokenizer: a tokenizer.json is usually larger than a ConfigMap holds (1 MiB); use s3:// or hf://"
            )
        return self

    @model_validator(mode="after")
    def _images(self) -> Workload:
        if self.images is not None and self.dataset is not None and self.dataset.image_field is not None:
            raise ValueError(_IMAGES_OR_FIELD)
        if self.conversation is not None and self.has_images:
            raise ValueError(_IMAGES_IN_CONVERSATION)
        return self

    def prompt_mix(self) -> tuple[float, float]:
        """P of the whole traffic as (mean, stddev): promptTokens', or the mixture of the buckets'
        ranges by share (a synthetic prompt's length is uniform over its bucket's range); a shared
        prefix adds its length."""
        prefix = self.shared_prefix.tokens if self.shared_prefix is not None else 0
        if self.prompt_tokens is not None:
            return prefix + float(self.prompt_tokens.mean), float(self.prompt_tokens.stddev)
        parts = [(b.share, (b.min_tokens + b.max_tokens) / 2, ((b.max_tokens - b.min_tokens + 1) ** 2 - 1) / 12)
                 for b in self.buckets]  # fmt: skip
        mean, stddev = _mixture(parts)
        return prefix + mean, stddev

    def output_mix(self) -> tuple[float, float]:
        """G of the whole traffic as (mean, stddev): with buckets, the mixture of their output lengths."""
        if not self.buckets:
            return float(self.output_tokens.mean), float(self.output_tokens.stddev)
        dists = [(b.share, b.output_tokens or self.output_tokens) for b in self.buckets]
        return _mixture([(share, float(d.mean), float(d.stddev) ** 2) for share, d in dists])


def _mixture(parts: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(mean, stddev) of a mixture of (weight, mean, variance) components."""
    mean = sum(w * m for w, m, _ in parts)
    second = sum(w * (v + m * m) for w, m, v in parts)
    return mean, max(0.0, second - mean * mean) ** 0.5


class LatencySlo(ApiModel):
    """L: a latency percentile bound."""

    metric: LatencyMetric = Field(default="e2e", description="e2e, ttft, tpot or itl (definitions in docs/metrics.md).")
    percentile: float = Field(default=95, gt=0, lt=100, description="Percentile, strictly between 0 and 100.")
    max_seconds: float = Field(gt=0, description="Bound on that percentile, seconds.")


MAX_EXTRA_BOUNDS = 4


class Slo(ApiModel):
    """The service level objective every load level is judged by."""

    latency: LatencySlo = Field(description="Latency objective (the one the report's SLO columns show).")
    additional_latency: list[LatencySlo] = Field(
        default_factory=list,
        max_length=MAX_EXTRA_BOUNDS,
        description="Further latency bounds that must hold at the same time, e.g. TTFT p95 and TPOT p90 beside "
        "E2E p99: a level meets the SLO only when every bound does; goodput counts the requests within all of them.",
    )
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Highest allowed share of failed requests.")

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "!has(self.additionalLatency) || self.additionalLatency.all(b, "
                "!(b.metric == self.latency.metric && b.percentile == self.latency.percentile) && "
                "self.additionalLatency.exists_one(c, c.metric == b.metric && c.percentile == b.percentile))",
                "additionalLatency: each metric and percentile is bounded once",
                ".additionalLatency",
            )
        ]

    @model_validator(mode="after")
    def _bounds_once(self) -> Slo:
        seen = [(b.metric, b.percentile) for b in self.bounds]
        repeated = sorted({f"p{q:g} {m}" for m, q in seen if seen.count((m, q)) > 1})
        if repeated:
            raise ValueError(
                f"additionalLatency: each metric and percentile is bounded once; repeated: {', '.join(repeated)}"
            )
        return self

    @property
    def bounds(self) -> list[LatencySlo]:
        """Every latency bound: ``latency`` first."""
        return [self.latency, *self.additional_latency]


class Levels(ApiModel):
    """Load levels: an explicit list, or a range [min, max] (doubling for sweep, bisected for search)."""

    min: float | None = Field(default=None, gt=0, le=MAX_LEVEL, description="Lowest level.")
    max: float | None = Field(default=None, gt=0, le=MAX_LEVEL, description="Highest level.")
    levels: list[Annotated[float, Field(gt=0, le=MAX_LEVEL)]] | None = Field(
        default=None, min_length=1, max_length=MAX_LIST, description="Explicit levels, run in this order."
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "has(self.levels) ? !has(self.min) && !has(self.max) : has(self.min) && has(self.max)",
                "levels: give either levels: [...] or both min and max",
                ".levels",
            ),
            cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min: must be <= max", ".min"),
        ]

    @model_validator(mode="after")
    def _one_form(self) -> Levels:
        if (self.levels is None) == (self.min is None or self.max is None) or (
            self.levels is not None and (self.min is not None or self.max is not None)
        ):
            raise ValueError("levels: give either levels: [...] or both min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: must be <= max")
        return self


class Load(ApiModel):
    """How load is offered: levels of concurrency (closed loop) or of arrival rate (open loop)."""

    mode: LoadMode = Field(
        default="search",
        description="search: find the highest level meeting the SLO; sweep: run every level; fixed: one level.",
    )
    arrival: Arrival = Field(
        default="closed",
        description="closed: each of `concurrency` users sends its next request when the last ends; "
        "poisson/constant: open loop at `rate` requests/s, one schedule shared by all workers; trace: open loop "
        "replaying workload.trace's arrivals, time-scaled to a mean of `rate` requests/s.",
    )
    concurrency: Levels = Field(
        default_factory=lambda: Levels(min=1, max=64), description="Concurrent requests (closed loop)."
    )
    rate: Levels | None = Field(default=None, description="Requests per second (open loop). Required unless closed.")
    warmup: PhaseDuration = Field(default="10s", description="Start of each stage excluded from the statistics.")
    stage_duration: StageDuration = Field(default="60s", description="Length of each stage's steady window.")
    drain: PhaseDuration = Field(
        default="30s",
        description="Time in-flight requests get to finish after a stage; later ones count as incomplete.",
    )
    min_requests_per_stage: int = Field(
        default=50,
        ge=1,
        description="A stage is extended (up to 3x) until its steady window holds this many requests, and at "
        "least as many as a confidence interval of the SLO percentile needs (72 for p95, 36 for p90).",
    )
    tolerance: float = Field(
        default=0.1, gt=0, le=1, description="search: stop bisecting when the bracket is within this relative width."
    )
    max_stages: int = Field(default=12, ge=1, le=100, description="search: upper bound on stages per variant.")
    workers: int = Field(default=2, ge=1, le=256, description="Load generator worker processes (pods).")
    endpoint_retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Times a stage during which the endpoint could not be reached (connections refused beyond "
        "slo.maxErrorRate: the server was down, not slow) is run again once it answers again, e.g. after its pod "
        "restarted. Each wait lasts up to the load generator's --ready-timeout. 0: the variant fails at once.",
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "self.arrival == 'closed' || has(self.rate)",
                "rate: required for open-loop arrival poisson, constant or trace (requests/s)",
                ".rate",
            ),
            cel(
                "self.mode != 'fixed' || (self.arrival == 'closed' ? "
                "(has(self.concurrency.levels) ? size(self.concurrency.levels) == 1 : "
                "self.concurrency.min == self.concurrency.max) : !has(self.rate) || "
                "(has(self.rate.levels) ? size(self.rate.levels) == 1 : self.rate.min == self.rate.max))",
                "mode: fixed runs exactly one level: give levels: [x] or min == max",
                ".mode",
            ),
        ]

    @model_validator(mode="after")
    def _levels_fit_mode(self) -> Load:
        if self.arrival != "closed" and self.rate is None:
            raise ValueError("rate: required for open-loop arrival poisson, constant or trace (requests/s)")
        chosen = self.active_levels
        if self.mode == "fixed" and (
            (chosen.levels is not None and len(chosen.levels) != 1)
            or (chosen.levels is None and chosen.min != chosen.max)
        ):
            raise ValueError("mode: fixed runs exactly one level: give levels: [x] or min == max")
        return self

    @property
    def active_levels(self) -> Levels:
        """The level spec that drives this run: concurrency (closed loop) or rate (open loop)."""
        if self.arrival == "closed" or self.rate is None:
            return self.concurrency
        return self.rate

    @property
    def warmup_s(self) -> float:
        return parse_duration(self.warmup)

    @property
    def stage_duration_s(self) -> float:
        return parse_duration(self.stage_duration)

    @property
    def drain_s(self) -> float:
        return parse_duration(self.drain)


class Pricing(ApiModel):
    """Where instance prices come from."""

    source: Literal["builtin", "aws-pricing-api"] = Field(
        default="builtin", description="builtin: the shipped table (dated); aws-pricing-api: live via boto3."
    )
    region: Name = Field(default="us-east-1", description="AWS region whose prices apply.")
    capacity_type: Literal["on-demand", "spot", "savings-plan"] = Field(
        default="on-demand", description="Capacity type; spot and savings-plan apply `discount`."
    )
    discount: float | None = Field(
        default=None, ge=0, lt=1, description="Share off on-demand for spot/savings-plan (default per type)."
    )


class Day(ApiModel):
    """A day of traffic to price (docs/cost-model.md, "A day of traffic"): R for each hour."""

    hourly_requests_per_minute: list[Annotated[float, Field(ge=0, le=10_000_000)]] = Field(
        min_length=24, max_length=24, description="R for each hour of the day, 00:00 first: 24 values (req/min)."
    )
    scale_up_delay: PhaseDuration = Field(
        default="5m",
        description="Autoscaled fleet: how long a new instance takes to serve; it is paid from that long before "
        "its hour.",
    )
    min_instances: int = Field(default=1, ge=0, le=10_000, description="Autoscaled fleet: never fewer instances.")

    @property
    def scale_up_delay_s(self) -> float:
        return parse_duration(self.scale_up_delay)


class Analysis(ApiModel):
    """How the answer is computed."""

    headroom: float = Field(
        default=0.8, gt=0, le=1, description="Plan instances to run at this share of their measured capacity."
    )
    pricing: Pricing = Field(default_factory=Pricing, description="Price source.")
    day: Day | None = Field(
        default=None,
        description="A day of traffic to price with each variant's measured capacity: a fleet sized for the peak "
        "and an autoscaled one, in $/day and $ per million tokens.",
    )


class Verify(ApiModel):
    """The verify phase (docs/verify.md): deploy the recommended N×T behind one Service and measure
    whether it holds R under the SLO."""

    window: StageDuration = Field(
        default="2m", description="Steady window of the verification stage at R (warmup and drain as load's)."
    )
    step_above: float | None = Field(
        default=None,
        gt=1,
        le=4,
        description="Also run a stage at this multiple of R after the one at R: the fleet's margin (informational).",
    )
    max_extra_instances: int = Field(
        default=2,
        ge=0,
        le=16,
        description="When N is refuted, try N+1, N+2, ... up to N plus this many; 0: report the refutation only.",
    )

    @property
    def window_s(self) -> float:
        return parse_duration(self.window)


ScoreName = Literal["exactMatch", "f1", "rougeL", "cosine", "judge"]
SCORES: tuple[ScoreName, ...] = ScoreName.__args__  # type: ignore[attr-defined]


def _text_scores() -> list[ScoreName]:
    return ["exactMatch", "f1", "rougeL"]


_JUDGE_URL = "url: required for api openai-chat (the judge's base URL, e.g. http://judge.models:8000/v1)"
_BEDROCK_JUDGE_KEY = (
    "apiKeySecretRef: a Bedrock judge signs with the analysis Job's AWS identity (IRSA); remove apiKeySecretRef"
)


class Judge(ApiModel):
    """An LLM judging answers correct or incorrect: an OpenAI-compatible chat API, or Bedrock's
    Converse API."""

    name: Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=40)] = Field(description="Unique name.")
    api: Literal["openai-chat", "bedrock"] = Field(
        default="openai-chat",
        description="openai-chat: POST {url}/chat/completions; bedrock: Bedrock Converse with the analysis's AWS "
        "identity.",
    )
    url: Url | None = Field(
        default=None,
        description="Base URL of the API, e.g. http://judge.models:8000/v1. Required for api openai-chat; for api "
        "bedrock, a Bedrock runtime endpoint to use instead of the region's (e.g. a VPC endpoint).",
    )
    model: Name = Field(description="Model name sent in each request; for api bedrock, the model or profile id.")
    region: Name | None = Field(default=None, description="AWS region of a Bedrock judge (default: the analysis's).")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Bearer token of an openai-chat judge, from a Secret of the Benchmark's namespace (the analysis "
        "Job's env).",
    )
    price_per_1m_input_tokens: float | None = Field(
        default=None, ge=0, alias="pricePer1mInputTokens", description="USD, for the judging's cost."
    )
    price_per_1m_output_tokens: float | None = Field(
        default=None, ge=0, alias="pricePer1mOutputTokens", description="USD, for the judging's cost."
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel("!(!has(self.api) || self.api == 'openai-chat') || has(self.url)", _JUDGE_URL, ".url"),
            cel(
                "!has(self.api) || self.api != 'bedrock' || !has(self.apiKeySecretRef)",
                _BEDROCK_JUDGE_KEY,
                ".apiKeySecretRef",
            ),
        ]

    @model_validator(mode="after")
    def _per_api(self) -> Judge:
        if self.api == "openai-chat" and self.url is None:
            raise ValueError(_JUDGE_URL)
        if self.api == "bedrock" and self.api_key_secret_ref is not None:
            raise ValueError(_BEDROCK_JUDGE_KEY)
        return self


class Judging(ApiModel):
    """A panel of LLM judges (FMBench's PoLL): each answer's score is the panel's majority verdict."""

    judges: list[Judge] = Field(
        min_length=1,
        max_length=9,
        description="The panel; an odd number avoids split verdicts.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    prompt: Text | None = Field(
        default=None,
        description="The judge prompt: a file (path or s3://) with {question}, {reference} and {answer}; default: "
        "the shipped analysis/data/judge_prompt.txt. The judge answers CORRECT or INCORRECT.",
    )
    max_answers: int = Field(
        default=200, ge=1, le=100_000, description="Answers per variant sent to the panel, drawn by request id."
    )
    max_calls: int = Field(default=5000, ge=1, le=1_000_000, description="Judge calls in all, cached ones not counted.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Judge calls in flight.")

    @model_validator(mode="after")
    def _unique(self) -> Judging:
        names = [j.name for j in self.judges]
        if len(set(names)) < len(names):
            raise ValueError("judges: names must be unique")
        return self


_JUDGING = "judging: metric judge needs a judging panel, and a panel needs judge among metrics"
_EMBEDDING = "embedding: metric cosine needs an embedding endpoint, and an endpoint needs cosine among metrics"


class EmbeddingEndpoint(ApiModel):
    """The embedding model of metric cosine, on an OpenAI-compatible embeddings API."""

    url: Url = Field(description="Base URL of the API, e.g. http://embed.models:8000/v1.")
    model: Name = Field(description="Model name sent in each request.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Bearer token, from a Secret of the Benchmark's namespace (the analysis Job's env)."
    )
    max_answers: int = Field(
        default=500, ge=1, le=100_000, description="Answers per variant embedded, drawn by request id."
    )


class AccuracyFloor(ApiModel):
    """The accuracy a recommended variant must have (docs/accuracy.md)."""

    metric: ScoreName = Field(description="The score the floor is on.")
    min: float = Field(
        gt=0, le=1, description="A variant is recommended only if its score is at least this, with 95% confidence."
    )


class Evaluation(ApiModel):
    """Accuracy next to cost: the answers scored against the dataset's references (docs/accuracy.md)."""

    metrics: list[ScoreName] = Field(
        default_factory=_text_scores,
        min_length=1,
        max_length=len(SCORES),
        description="exactMatch and f1 (SQuAD's, on normalized words), rougeL (longest common subsequence F1), "
        "cosine (embedding similarity to the reference; needs embedding), judge (the judging panel's majority "
        "verdict; needs judging).",
    )
    max_answer_chars: int = Field(
        default=4000, ge=100, le=100_000, description="Answer text kept per request (records' answer column)."
    )
    floor: AccuracyFloor | None = Field(
        default=None, description="Variants below it (or not shown to be above it) are not recommended."
    )
    judging: Judging | None = Field(default=None, description="The LLM judges of metric judge.")
    embedding: EmbeddingEndpoint | None = Field(default=None, description="The embedding model of metric cosine.")

    @model_validator(mode="after")
    def _floor_is_scored(self) -> Evaluation:
        if self.floor is not None and self.floor.metric not in self.metrics:
            raise ValueError(f"floor.metric: {self.floor.metric} is not among metrics ({', '.join(self.metrics)})")
        if ("judge" in self.metrics) != (self.judging is not None):
            raise ValueError(_JUDGING)
        if ("cosine" in self.metrics) != (self.embedding is not None):
            raise ValueError(_EMBEDDING)
        return self

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel(
                "!has(self.floor) || !has(self.metrics) || self.floor.metric in self.metrics",
                "floor.metric: must be among metrics",
                ".floor.metric",
            ),
            cel("(has(self.metrics) && 'judge' in self.metrics) == has(self.judging)", _JUDGING, ".judging"),
            cel("(has(self.metrics) && 'cosine' in self.metrics) == has(self.embedding)", _EMBEDDING, ".embedding"),
        ]


# A prefix with a run's own folder names would put this run's files inside another run's records.
_RUN_DIRS = "(^|/)(records|stages)(/|$)"
_RUN_DIRS_MESSAGE = "must not contain a records/ or stages/ folder: those are a run's own"


class S3Location(ApiModel):
    """An S3 prefix."""

    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")] = Field(
        description="Bucket name."
    )
    prefix: Annotated[str, Field(max_length=1024)] = Field(default="fmbench/", description="Key prefix.")
    region: Name | None = Field(default=None, description="Bucket region.")
    endpoint_url: Url | None = Field(default=None, description="S3-compatible endpoint (MinIO, tests).")

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [cel(f"!self.prefix.matches('{_RUN_DIRS}')", _RUN_DIRS_MESSAGE, ".prefix")]

    @model_validator(mode="after")
    def _not_inside_a_run(self) -> S3Location:
        if re.search(_RUN_DIRS, self.prefix):
            raise ValueError(f"prefix: {_RUN_DIRS_MESSAGE}")
        return self


class Report(ApiModel):
    """Where records and the report go."""

    s3: S3Location | None = Field(default=None, description="S3 destination; required on a cluster.")


class Prometheus(ApiModel):
    """Prometheus queried for server-side metrics during analysis."""

    url: Url = Field(description="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090.")


class Timeouts(ApiModel):
    """Deadlines per phase."""

    model_ready: StageDuration = Field(default="45m", description="Model servers Ready and answering.")
    run: RunDuration = Field(default="6h", description="The whole run, from creation.")

    @property
    def model_ready_s(self) -> float:
        return parse_duration(self.model_ready)


_IMAGES_API = (
    "variants: prompts with images go to api openai-chat or bedrock (engines "
    + ", ".join(e for e in get_args(Engine) if e not in TEXT_ONLY_ENGINES)
    + "); remove the other variants, or the images"
)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


_TRACE_ARRIVAL = "load.arrival: trace replays workload.trace; give both, or neither"
_EVALUATION = (
    "evaluation: scores answers against references: set workload.dataset.referenceField (a jsonl, parquet or "
    "longbench dataset)"
)


class BenchmarkSpec(ApiModel):
    """The whole experiment. Immutable once created: a new run is a new Benchmark."""

    model: ModelRef | None = Field(default=None, description="Model served by every variant without its own.")
    variants: list[Variant] = Field(
        min_length=1,
        max_length=32,
        description="Deployments or endpoints under test; names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    workload: Workload = Field(description="Traffic to size for (R, P, G).")
    slo: Slo = Field(description="Latency and error objective (L).")
    load: Load = Field(default_factory=Load, description="Load levels, arrival process, stage timing.")
    analysis: Analysis = Field(default_factory=Analysis, description="Sizing and pricing.")
    report: Report = Field(default_factory=Report, description="Output location.")
    prometheus: Prometheus | None = Field(default=None, description="Server-side metrics source.")
    cleanup: CleanupPolicy = Field(
        default="Always", description="Delete model servers after the run: Always, OnSuccess or Never."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Phase deadlines.")
    evaluation: Evaluation | None = Field(
        default=None,
        description="Score every variant's answers against the dataset's references, and set an accuracy floor "
        "(docs/accuracy.md).",
    )
    verify: Verify | None = Field(
        default=None,
        description="After the analysis, deploy the recommended N×T and check that it holds R under the SLO "
        "(on a cluster; docs/verify.md).",
    )

    @classmethod
    def cel_rules(cls) -> list[dict[str, str]]:
        return [
            cel("self == oldSelf", "spec is immutable: create a new Benchmark (new name) for a new run"),
            cel(
                "self.variants.all(v, !has(v.engine) || v.engine == 'simulator' || has(v.model) || has(self.model))",
                "model: required when a variant deploys a real engine (set spec.model or variants[].model)",
                ".model",
            ),
            cel(
                "(has(self.load) && self.load.arrival == 'trace') == has(self.workload.trace)",
                _TRACE_ARRIVAL,
                ".load.arrival",
            ),
            cel(
                "!(has(self.workload.images) || (has(self.workload.dataset) && has(self.workload.dataset.imageField)))"
                " || self.variants.all(v, has(v.endpoint) ? v.endpoint.api in "
                + _cel_list(IMAGE_APIS)
                + " : !(v.engine in "
                + _cel_list(TEXT_ONLY_ENGINES)
                + "))",
                _IMAGES_API,
                ".variants",
            ),
            cel(
                "!has(self.evaluation) || (has(self.workload.dataset) && has(self.workload.dataset.referenceField) && "
                "(!has(self.workload.dataset.format) || self.workload.dataset.format != 'sharegpt'))",
                _EVALUATION,
                ".evaluation",
            ),
        ]

    @model_validator(mode="after")
    def _references_to_score(self) -> BenchmarkSpec:
        ds = self.workload.dataset
        if self.evaluation is not None and (ds is None or ds.reference_field is None or ds.format == "sharegpt"):
            raise ValueError(_EVALUATION)
        return self

    @model_validator(mode="after")
    def _images_api(self) -> BenchmarkSpec:
        if self.workload.has_images:
            for v in self.variants:
                api = v.endpoint.api if v.endpoint is not None else None
                if (api is not None and api not in IMAGE_APIS) or v.engine in TEXT_ONLY_ENGINES:
                    raise ValueError(_IMAGES_API)
        return self

    @model_validator(mode="after")
    def _trace_arrival(self) -> BenchmarkSpec:
        if (self.load.arrival == "trace") != (self.workload.trace is not None):
            raise ValueError(_TRACE_ARRIVAL)
        return self

    @model_validator(mode="after")
    def _model_for_engines(self) -> BenchmarkSpec:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variants: names must be unique; repeated: {', '.join(duplicates)}")
        for v in self.variants:
            if v.engine not in (None, "simulator") and v.model is None and self.model is None:
                raise ValueError(
                    "model: required when a variant deploys a real engine (set spec.model or variants[].model)"
                )
        return self

    def model_for(self, variant: Variant) -> ModelRef | None:
        return variant.model or self.model
