"""Where one variant's requests go and in which wire API. Pure.

``engine:`` variants are deployed by the operator or the local runner, which know the model
server's URL and pass it as ``--endpoint-url``; the engine decides the API
(``fmbench_k8s.contract.engines``: vllm/sglang/neuronx-vllm/djl-lmi/simulator speak openai-chat, tgi
speaks tgi, triton-trtllm speaks triton). ``endpoint:`` variants carry everything in the spec;
``--endpoint-url`` then overrides the URL (for sagemaker/bedrock: the AWS service endpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fmbench_k8s.api.spec import BenchmarkSpec, RequestParams, Variant
from fmbench_k8s.contract.engines import engine_info

LOADGEN_APIS = ("openai-chat", "openai-completions", "tgi", "triton", "sagemaker", "bedrock")
API_KEY_ENV = "FMBENCH_API_KEY"


class TargetError(ValueError):
    """The variant and the command line do not say where to send requests."""


@dataclass(frozen=True)
class Target:
    api: str
    url: str | None  # HTTP base URL (OpenAI APIs include /v1); for AWS APIs an endpoint override
    model: str | None = None  # OpenAI `model`, Triton model name
    endpoint_name: str | None = None  # SageMaker
    model_id: str | None = None  # Bedrock
    region: str | None = None
    payload: str = "tgi"  # SageMaker container format
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.api == "sagemaker":
            return f"sagemaker endpoint {self.endpoint_name} ({self.payload})"
        if self.api == "bedrock":
            return f"bedrock model {self.model_id}"
        return f"{self.api} {self.url}"


def api_key(raw: str) -> str:
    """The bearer token from a Secret's value. ``kubectl create secret --from-file`` keeps the file's
    final newline, which broke every request: surrounding whitespace is dropped. A control character
    or space inside would end the header and start another (header injection): refused."""
    token = raw.strip()
    bad = next(((i, c) for i, c in enumerate(token) if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        i, c = bad
        raise TargetError(
            f"{API_KEY_ENV} (endpoint.apiKeySecretRef): the API key has character {ord(c):#04x} at position {i}; "
            "a bearer token is printable ASCII without spaces; recreate the Secret with the bare key"
        )
    if not token:
        raise TargetError(f"{API_KEY_ENV} (endpoint.apiKeySecretRef): the API key is empty; put the key in the Secret")
    return token


def engine_api(engine: str) -> str:
    """The wire API the load generator speaks to a deployed engine."""
    return engine_info(engine).api


def resolve_target(
    spec: BenchmarkSpec, variant: Variant, endpoint_url: str | None = None, api: str | None = None,
    env: dict[str, str] | None = None,
) -> Target:  # fmt: skip
    env = dict(os.environ) if env is None else env
    if api is not None and api not in LOADGEN_APIS:
        raise TargetError(f"--api: unknown API {api!r}; use one of {', '.join(LOADGEN_APIS)}")
    headers: dict[str, str] = {}
    if env.get(API_KEY_ENV):
        headers["Authorization"] = f"Bearer {api_key(env[API_KEY_ENV])}"
    if variant.engine is not None:
        if endpoint_url is None:
            raise TargetError(
                f"--endpoint-url is required for variant {variant.name!r} (engine {variant.engine}): "
                "the operator or runner that deployed the model server knows its URL"
            )
        chosen = api or engine_api(variant.engine)
        model_ref = spec.model_for(variant)
        model = model_ref.name if model_ref is not None else None
        if chosen == "triton":
            model = "ensemble"  # the TRT-LLM backend's conventional entry model
        exact = engine_info(variant.engine).ignore_eos and chosen.startswith("openai")
        extra: dict[str, Any] = {"ignore_eos": True} if exact else {}
        return Target(chosen, endpoint_url, model, extra_body=extra, headers=headers)
    ep = variant.endpoint
    assert ep is not None  # the model enforces engine xor endpoint
    chosen = api or ep.api
    url = endpoint_url or ep.url
    if chosen in ("openai-chat", "openai-completions", "tgi", "triton") and url is None:
        raise TargetError(f"variant {variant.name!r}: api {chosen} needs a URL (endpoint.url or --endpoint-url)")
    body: dict[str, Any] = {"stream": True} if chosen == "sagemaker" and ep.payload == "tgi" else {}
    if chosen.startswith("openai"):
        exact = ep.engine is not None and engine_info(ep.engine).ignore_eos
        body.update((ep.request or RequestParams()).body(exact_by_default=exact))
    return Target(
        api=chosen,
        url=url,
        model=ep.model,
        endpoint_name=ep.endpoint_name,
        model_id=ep.model_id,
        region=ep.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        payload=ep.payload,
        extra_body=body,
        headers=headers,
    )
