"""What each serving engine is on the wire and in a pod: its API, port, image, probes, command
line, and whether it honours ``ignore_eos`` (exact output lengths).

Shared by the operator (model server Deployments), the local runner and the load generator, so an
engine is described once. Images are the engines' public release images at the versions this
release was written against; override per variant with ``image``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmbench_k8s import __version__
from fmbench_k8s.api.benchmark import Benchmark
from fmbench_k8s.api.spec import Variant
from fmbench_k8s.contract.instances import UnknownInstanceTypeError, shape_of


@dataclass(frozen=True)
class EngineInfo:
    api: str  # endpoint API the load generator speaks to it
    image: str
    port: int
    health_path: str
    base_path: str  # appended to http://service:port for the load generator's --endpoint-url
    needs_cluster: bool = True
    ignore_eos: bool = False  # honours vLLM's ignore_eos: every request generates exactly max_tokens
    # The Python module that serves it, for `fmbench-k8s run --engine-python ENGINE=PYTHON` on a
    # machine that has the engine installed (None: only in its container image, on a cluster).
    local_module: str | None = None


ENGINES: dict[str, EngineInfo] = {
    "vllm": EngineInfo(
        "openai-chat",
        "vllm/vllm-openai:v0.11.0",
        8000,
        "/health",
        "/v1",
        ignore_eos=True,
        local_module="vllm.entrypoints.openai.api_server",
    ),
    "sglang": EngineInfo(
        "openai-chat",
        "lmsysorg/sglang:v0.5.3-cu126",
        30000,
        "/health",
        "/v1",
        ignore_eos=True,
        local_module="sglang.launch_server",
    ),
    "neuronx-vllm": EngineInfo(
        "openai-chat",
        "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1-neuronx-py310-sdk2.25.0-ubuntu22.04",
        8000,
        "/health",
        "/v1",
        ignore_eos=True,
    ),
    "djl-lmi": EngineInfo("openai-chat", "deepjavalibrary/djl-serving:0.33.0-lmi", 8080, "/ping", "/v1"),
    "tgi": EngineInfo("tgi", "ghcr.io/huggingface/text-generation-inference:3.3.4", 80, "/health", ""),
    "triton-trtllm": EngineInfo(
        "triton", "nvcr.io/nvidia/tritonserver:25.08-trtllm-python-py3", 8000, "/v2/health/ready", ""
    ),
    # The project's own image runs the simulator; the operator substitutes its configured image.
    "simulator": EngineInfo("openai-chat", "", 8000, "/health", "/v1", needs_cluster=False, ignore_eos=True),
}


def engine_info(engine: str) -> EngineInfo:
    try:
        return ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}") from None


# NeuronCores per Inferentia2 / Trainium device: tensor parallelism on Neuron counts cores.
NEURON_CORES_PER_DEVICE = 2


def server_args(
    engine: str, model: str, port: int, *, tensor_parallel: int = 1, revision: str | None = None
) -> list[str]:
    """The model server's command line (after the image's entrypoint) for a real engine: the model,
    its revision, and tensor parallelism over ``tensor_parallel`` accelerators (GPUs, or
    NeuronCores). vLLM's is checked by vLLM 0.32's own parser in tests/engines/."""
    tp = max(1, tensor_parallel)
    if engine in ("vllm", "neuronx-vllm"):
        args = ["--model", model, "--port", str(port)]
        args += ["--tensor-parallel-size", str(tp)] if tp > 1 else []
        return args + (["--revision", revision] if revision else [])
    if engine == "sglang":
        args = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            model,
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--enable-metrics",  # /metrics on the API port: its queue and timers reach the report
        ]
        # --tp-size, not --tp: SGLang takes --tp only as an abbreviation, which a new --tp-* flag would break
        args += ["--tp-size", str(tp)] if tp > 1 else []
        return args + (["--revision", revision] if revision else [])
    if engine == "tgi":
        args = ["--model-id", model, "--port", str(port)]
        args += ["--num-shard", str(tp)] if tp > 1 else []
        return args + (["--revision", revision] if revision else [])
    if engine == "djl-lmi":
        return []  # LMI reads its settings from the environment: server_env
    if engine == "triton-trtllm":
        return ["tritonserver", "--model-repository=/models", f"--http-port={port}"]
    raise ValueError(f"no arguments known for engine {engine!r}")


CACHE_MOUNT = "/model-cache"


def cache_env(engine: str) -> dict[str, str]:
    """Where an engine keeps downloads (and Neuron its compiled graphs) when ``model.cache`` gives
    it a volume at CACHE_MOUNT: vLLM, SGLang, TGI and LMI download through huggingface_hub, which
    reads HF_HOME; Neuron compiles once per model and shape. Triton serves what its image holds."""
    if engine in ("simulator", "triton-trtllm"):
        return {}
    env = {"HF_HOME": f"{CACHE_MOUNT}/huggingface"}
    if engine == "neuronx-vllm":
        env["NEURON_COMPILE_CACHE_URL"] = f"{CACHE_MOUNT}/neuron-compile-cache"
    return env


def local_argv(
    engine: str, python: str, model: str, port: int, *, tensor_parallel: int = 1, revision: str | None = None
) -> list[str]:
    """The engine as a process of this machine (``fmbench-k8s run --engine-python``): the command
    line the operator gives its pod, run by ``python``, listening on loopback only."""
    module = engine_info(engine).local_module
    assert module is not None
    args = server_args(engine, model, port, tensor_parallel=tensor_parallel, revision=revision)
    if args[:3] == ["python3", "-m", module]:  # the image's own launcher: this machine's Python instead
        args = args[3:]
    return [python, "-m", module, *args, "--host", "127.0.0.1"]


def server_env(engine: str, model: str, *, tensor_parallel: int = 1, revision: str | None = None) -> dict[str, str]:
    """Environment a real engine reads its settings from (DJL-LMI: ``OPTION_<NAME>`` for each
    ``option.<name>`` of serving.properties)."""
    if engine != "djl-lmi":
        return {}
    env = {"HF_MODEL_ID": model, "OPTION_TENSOR_PARALLEL_DEGREE": str(max(1, tensor_parallel))}
    return env | ({"OPTION_REVISION": revision} if revision else {})


def cluster_problems(bench: Benchmark) -> list[str]:
    """Why the operator would refuse ``bench`` (InvalidSpec) although its schema is valid; one home
    for the rules ``validate`` and the operator apply."""
    problems = [
        f"spec.variants[{i}].image: engine triton-trtllm serves a model repository at /models that the stock "
        "Triton image does not have; give an image with your TRT-LLM engine built into /models"
        for i, v in enumerate(bench.spec.variants)
        if v.engine == "triton-trtllm" and v.image is None
    ]
    for i, v in enumerate(bench.spec.variants):
        if v.engine is None or v.instance_type is None:
            continue
        try:
            shape = shape_of(v.instance_type)
        except UnknownInstanceTypeError as err:  # the operator could not size or schedule its pods
            problems.append(f"spec.variants[{i}].instanceType: {err}; the operator sizes pods only for these")
            continue
        if v.engine != "simulator" and v.accelerators is not None and v.accelerators > shape.accelerators:
            have = f"{shape.accelerators} {shape.resource}" if shape.resource else "no accelerators"
            problems.append(
                f"spec.variants[{i}].accelerators: {v.accelerators} requested, but {v.instance_type} has {have}; "
                "no node could ever run the pod"
            )
    if (bench.metadata.namespace or "").startswith("kube-"):
        problems.append(
            "metadata.namespace: Benchmarks do not run in kube-* namespaces (their pods would run beside the "
            "cluster's own); create it in a namespace of your team"
        )
    if bench.spec.report.s3 is None:
        problems.append(
            "spec.report.s3: required on a cluster (records and the report go to S3); add "
            "report: {s3: {bucket: YOUR-BUCKET}} (only `fmbench-k8s run` works without it)"
        )
    return problems


def served_by(variant: Variant) -> str:
    """What answers a variant's requests as the operator deploys it (the report's provenance; a
    local run that serves an engine from this machine's Python says so instead)."""
    if variant.endpoint is not None:
        ep = variant.endpoint
        behind = f"{ep.engine} behind an " if ep.engine is not None else ""
        return f"{behind}{ep.api} endpoint {ep.url or ep.model_id or ep.endpoint_name}"
    assert variant.engine is not None  # the model guarantees engine xor endpoint
    if variant.engine == "simulator":
        return (
            f"fmbench-k8s {__version__} simulator, profile {variant.instance_type} "
            "(illustrative timings, not a measurement of that instance)"
        )
    return f"{variant.engine}, image {variant.image or engine_info(variant.engine).image}"


def variant_api(variant: Variant) -> str:
    """The wire API the load generator uses for ``variant``."""
    if variant.endpoint is not None:
        return variant.endpoint.api
    assert variant.engine is not None  # the model guarantees engine xor endpoint
    return engine_info(variant.engine).api
