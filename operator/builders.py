"""Child objects of a Benchmark, as plain dicts from pure functions (unit-tested without a cluster).

Names are deterministic so that every reconcile - after a restart, a retry, a conflict - asks for
the same objects and creation is create-if-absent (the k6-operator #800 lesson).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from fmbench_k8s.api.benchmark import API_VERSION, KIND, Benchmark, to_manifest
from fmbench_k8s.api.spec import Variant
from fmbench_k8s.contract.engines import (
    CACHE_MOUNT,
    NEURON_CORES_PER_DEVICE,
    cache_env,
    engine_info,
    server_args,
    server_env,
    variant_api,
)
from fmbench_k8s.contract.instances import GPU, NEURON, shape_of
from fmbench_k8s.contract.layout import (
    DATASETS_DIR,
    EMBEDDING_KEY_ENV,
    LoadgenTarget,
    analyze_args,
    judge_key_env,
    loadgen_master_args,
    loadgen_worker_args,
    run_path,
)
from fmbench_k8s.contract.verification import VERIFY_FOLDER, fleet_variant

LABEL_BENCHMARK = "fmbench.io/benchmark"
LABEL_VARIANT = "fmbench.io/variant"
LABEL_COMPONENT = "fmbench.io/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "fmbench-k8s"}
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true"}
LOCUST_PORT = 5557
METRICS_PORT = 9646
ENDPOINT_RECOVERY_S = 900
SPEC_MOUNT = "/etc/fmbench"
TERMINATION_LOG = "/dev/termination-log"
Resources = dict[str, dict[str, str]]
# Requests and limits of the pods that run the project's image, by component (the chart's
# runner.resources overrides them). The simulator stands in for an instance without being one: it
# needs a fraction of a core however large the instance type it simulates.
DEFAULT_RESOURCES: Mapping[str, Resources] = {
    "loadgenMaster": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    "loadgenWorker": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    "analysis": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "simulator": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
}


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of the operator deployment that shape the children."""

    image: str = "ghcr.io/fmbench-k8s/fmbench-k8s:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Annotations of each run's ServiceAccount, e.g. eks.amazonaws.com/role-arn for IRSA (S3, pricing).
    service_account_annotations: tuple[tuple[str, str], ...] = ()
    # Secrets for pulling the project's image; every pod that runs it gets them.
    image_pull_secrets: tuple[str, ...] = ()
    # Extra environment of the load generator and analysis pods (the chart's runner.extraEnv), e.g.
    # S3 credentials from a Secret where IRSA is not available, or a proxy.
    runner_env: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    # The chart's modelServers.allowed*Keys: what a variant may tolerate and select (empty: any).
    allowed_toleration_keys: tuple[str, ...] = ()
    allowed_node_selector_keys: tuple[str, ...] = ()
    # The chart's monitoring.endpoints: a ScrapeConfig per endpoint variant (Prometheus Operator),
    # with the labels its Prometheus selects them by, scraped at this interval.
    scrape_endpoints: bool = False
    monitor_labels: tuple[tuple[str, str], ...] = ()
    scrape_interval: str = "15s"
    # The chart's karpenter.enabled: model servers select the capacity type the run is priced at.
    karpenter: bool = False

    def resources_of(self, component: str) -> Resources:
        return {kind: dict(values) for kind, values in self.resources[component].items()}


def child_name(bench: str, *parts: str) -> str:
    """``<bench>-<parts>``, shortened with a stable hash to fit a DNS label (63 characters)."""
    name = "-".join((bench, *parts))
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def labels(bench: Benchmark, component: str, variant: str | None = None) -> dict[str, str]:
    out = {**MANAGED_BY, LABEL_BENCHMARK: bench.metadata.name, LABEL_COMPONENT: component}
    if variant is not None:
        out[LABEL_VARIANT] = variant
    return out


def owner_reference(bench: Benchmark, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": bench.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(bench: Benchmark, uid: str, name: str, component: str, variant: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": bench.metadata.namespace,
        "labels": labels(bench, component, variant),
        "ownerReferences": [owner_reference(bench, uid)],
    }


def _restricted_security() -> dict[str, Any]:
    """Pod Security Standards "restricted" for our own containers."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# -- names -----------------------------------------------------------------------------------------


def server_name(bench: Benchmark, variant: Variant) -> str:
    return child_name(bench.metadata.name, variant.name, "server")


def master_name(bench: Benchmark, variant: Variant) -> str:
    return child_name(bench.metadata.name, variant.name, "lg-master")


def workers_name(bench: Benchmark, variant: Variant) -> str:
    return child_name(bench.metadata.name, variant.name, "lg-workers")


def spec_configmap_name(bench: Benchmark) -> str:
    return child_name(bench.metadata.name, "spec")


def analysis_name(bench: Benchmark) -> str:
    return child_name(bench.metadata.name, "analysis")


def runner_name(bench: Benchmark) -> str:
    return child_name(bench.metadata.name, "runner")


# -- shared pieces ---------------------------------------------------------------------------------


def run_uri(bench: Benchmark, run_id: str) -> str:
    s3 = bench.spec.report.s3
    if s3 is None:
        raise ValueError("spec.report.s3: required on a cluster (records and the report go to S3)")
    prefix = s3.prefix.strip("/")
    path = run_path(bench.metadata.namespace or "default", bench.metadata.name, run_id)
    return f"s3://{s3.bucket}/" + (f"{prefix}/{path}" if prefix else path)


def literal(text: str) -> str:
    """``text`` as the kubelet passes it on: it expands ``$(VAR)`` in args and env values from the
    container's environment, so a spec string such as the prefix ``$(FMBENCH_API_KEY)`` would
    otherwise put a Secret's value into S3 keys, logs and the status. ``$$`` is a literal ``$``."""
    return text.replace("$", "$$")


def _literal_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "value": literal(e["value"])} if "value" in e else e for e in env]


def _runner_env(bench: Benchmark, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """The environment of a run's load and analysis pods: the chart's extras (the cluster admin's,
    as given), then the spec's S3 settings (literal)."""
    s3 = bench.spec.report.s3
    spec_env = []
    if s3 is not None and s3.endpoint_url:
        spec_env.append({"name": "AWS_ENDPOINT_URL_S3", "value": s3.endpoint_url})
    if s3 is not None and s3.region:
        spec_env.append({"name": "AWS_REGION", "value": s3.region})
    return [dict(e) for e in cfg.runner_env] + _literal_env(spec_env)


def spec_configmap(bench: Benchmark, uid: str) -> dict[str, Any]:
    """The spec as the data-plane pods read it (mounted at /etc/fmbench/spec.yaml)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(bench, uid, spec_configmap_name(bench), "spec"),
        "data": {"spec.yaml": yaml.safe_dump(to_manifest(bench), sort_keys=False)},
    }


def runner_service_account(bench: Benchmark, uid: str, cfg: OperatorConfig) -> dict[str, Any]:
    """The identity of the run's load and analysis pods (S3 writes, pricing reads via IRSA/Pod Identity)."""
    meta = _meta(bench, uid, runner_name(bench), "runner")
    if cfg.service_account_annotations:
        meta["annotations"] = dict(cfg.service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def _spec_volume(bench: Benchmark) -> dict[str, Any]:
    return {"name": "spec", "configMap": {"name": spec_configmap_name(bench)}}


def _project_container(cfg: OperatorConfig, name: str, args: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["fmbench-k8s"],
        "args": [literal(a) for a in args],
        "env": env,
        "volumeMounts": [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}],
        "securityContext": {**_restricted_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


# -- model servers ---------------------------------------------------------------------------------


def _server_container(bench: Benchmark, variant: Variant, cfg: OperatorConfig) -> dict[str, Any]:
    assert variant.engine is not None and variant.instance_type is not None
    info = engine_info(variant.engine)
    shape = shape_of(variant.instance_type)
    model = bench.spec.model_for(variant)
    env: list[dict[str, Any]] = []
    args: list[str]
    if variant.engine == "simulator":
        image = cfg.image
        command: list[str] | None = ["fmbench-k8s", "simulate"]
        args = ["--host", "0.0.0.0", "--port", str(info.port), "--profile", variant.instance_type]
        if model is not None:
            args += ["--model", model.name]
    else:
        assert model is not None  # the spec requires a model for real engines
        image = variant.image or info.image
        command = None
        # Tensor parallelism over every accelerator the pod gets: GPUs, or NeuronCores on Neuron.
        devices = variant.accelerators if variant.accelerators is not None else shape.accelerators
        tp = devices * NEURON_CORES_PER_DEVICE if shape.resource == NEURON else devices
        args = server_args(variant.engine, model.name, info.port, tensor_parallel=tp, revision=model.revision)
        settings = server_env(variant.engine, model.name, tensor_parallel=tp, revision=model.revision)
        env += [{"name": k, "value": v} for k, v in settings.items()]
        if model.token_secret_ref is not None:
            ref = model.token_secret_ref
            # Only the reference goes into the pod spec; the value never passes through the operator.
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    image = variant.image or image
    args += list(variant.args)
    env += [{"name": e.name, "value": e.value} for e in variant.env]
    resources: Resources
    if variant.engine == "simulator":
        resources = cfg.resources_of("simulator")
    else:
        memory = f"{int(shape.memory_gib * 0.8)}Gi"
        resources = {
            "requests": {"cpu": str(max(1, math.floor(shape.vcpu * 0.8))), "memory": memory},
            "limits": {"memory": memory},
        }
        accelerators = variant.accelerators if variant.accelerators is not None else shape.accelerators
        if shape.resource is not None and accelerators > 0:
            resources["requests"][shape.resource] = str(accelerators)
            resources["limits"][shape.resource] = str(accelerators)
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "args": [literal(a) for a in args],
        "env": _literal_env(env),
        "ports": [{"name": "http", "containerPort": info.port}],
        "resources": resources,
        "readinessProbe": {
            "httpGet": {"path": info.health_path, "port": info.port},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "startupProbe": {  # model loading takes minutes; liveness waits for it
            "httpGet": {"path": info.health_path, "port": info.port},
            "periodSeconds": 10,
            "failureThreshold": 270,
        },
        "livenessProbe": {
            "httpGet": {"path": info.health_path, "port": info.port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        # A crash's last log lines land in the pod status, and so in the Benchmark's (observe.py).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if command is not None:  # the project's image: "restricted", as every pod of ours
        container["command"] = command
        container["securityContext"] = {**_restricted_security(), "readOnlyRootFilesystem": True}
    else:
        # Engine images run as root and write their caches under it, so "restricted" (non-root) is
        # not theirs to give; without privilege escalation or any capability they stay "baseline"
        # and hold no more than root in a container with nothing granted (docs/security.md).
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return container


def _tolerations(variant: Variant, resource: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if resource in (GPU, NEURON):
        out.append({"key": resource, "operator": "Exists", "effect": "NoSchedule"})
    for t in variant.tolerations:
        out.append(t.model_dump(by_alias=True, exclude_none=True))
    return out


def server_deployment(bench: Benchmark, variant: Variant, uid: str, cfg: OperatorConfig) -> dict[str, Any]:
    assert variant.instance_type is not None
    shape = shape_of(variant.instance_type)
    name = server_name(bench, variant)
    pod_labels = labels(bench, "server", variant.name)
    container = _server_container(bench, variant, cfg)
    # A simulator only plays the instance type: it runs wherever the variant's own selector allows.
    simulated = variant.engine == "simulator"
    pinned = {} if simulated else {"node.kubernetes.io/instance-type": variant.instance_type.removeprefix("ml.")}
    if cfg.karpenter and not simulated:
        pinned[CAPACITY_TYPE_LABEL] = karpenter_capacity(bench.spec.analysis.pricing.capacity_type)
    node_selector = {**pinned, **variant.node_selector}
    pod_spec: dict[str, Any] = {
        "nodeSelector": node_selector,
        "tolerations": _tolerations(variant, None if simulated else shape.resource),
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # A model server calls no Kubernetes API: no token of the namespace's default
        # ServiceAccount in a pod that runs an image the spec names.
        "automountServiceAccountToken": False,
        # No other Service's address in its environment: a Service named vllm gives VLLM_PORT=tcp://…,
        # which vLLM reads as its own setting.
        "enableServiceLinks": False,
    }
    if simulated:
        _add_pull_secrets(pod_spec, cfg)
    model = bench.spec.model_for(variant)
    claim = model.cache if model is not None else None
    cache = cache_env(variant.engine or "") if claim is not None else {}
    if claim is not None and cache:  # the claim, and where the engine keeps its files in it
        pod_spec["volumes"].append({"name": "model-cache", "persistentVolumeClaim": {"claimName": claim.claim_name}})
        container["volumeMounts"].append({"name": "model-cache", "mountPath": CACHE_MOUNT})
        container["env"] += [{"name": k, "value": v} for k, v in cache.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(bench, uid, name, "server", variant.name),
        "spec": {
            "replicas": variant.replicas,
            "selector": {
                "matchLabels": {
                    LABEL_BENCHMARK: bench.metadata.name,
                    LABEL_VARIANT: variant.name,
                    LABEL_COMPONENT: "server",
                }
            },
            # Karpenter never moves a model server mid-run (drift, expiry, consolidation).
            "template": {"metadata": {"labels": pod_labels, "annotations": DO_NOT_DISRUPT}, "spec": pod_spec},
        },
    }


def karpenter_capacity(priced_as: str) -> str:
    """The Karpenter capacity type whose price a run is sized at: spot, or on-demand (for on-demand
    and savings-plan, which discounts on-demand capacity)."""
    return "spot" if priced_as == "spot" else "on-demand"


def server_service(bench: Benchmark, variant: Variant, uid: str) -> dict[str, Any]:
    assert variant.engine is not None
    info = engine_info(variant.engine)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(bench, uid, server_name(bench, variant), "server", variant.name),
        "spec": {
            "selector": {LABEL_BENCHMARK: bench.metadata.name, LABEL_VARIANT: variant.name, LABEL_COMPONENT: "server"},
            "ports": [{"name": "http", "port": info.port, "targetPort": info.port}],
        },
    }


def endpoint_url(bench: Benchmark, variant: Variant) -> str | None:
    """Where the load generator reaches a deployed variant (None for ``endpoint:`` variants)."""
    if variant.engine is None:
        return None
    info = engine_info(variant.engine)
    ns = bench.metadata.namespace or "default"
    return f"http://{server_name(bench, variant)}.{ns}.svc:{info.port}{info.base_path}"


# -- load generation -------------------------------------------------------------------------------


def _loadgen_env(bench: Benchmark, variant: Variant, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Storage settings and, for endpoints that need one, the bearer token as a Secret reference."""
    env = _runner_env(bench, cfg)
    ref = variant.endpoint.api_key_secret_ref if variant.endpoint is not None else None
    if ref is not None:
        env.append({"name": "FMBENCH_API_KEY", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _loadgen_target(bench: Benchmark, variant: Variant, run_id: str, verify: int | None) -> LoadgenTarget:
    """The variant's load, or with ``verify`` the verification of that many instances of it: the
    fleet's Service, and the run's verify/ folder."""
    url = endpoint_url(bench, _named(variant, verify))
    output = run_uri(bench, run_id) + (f"/{VERIFY_FOLDER}" if verify is not None else "")
    return LoadgenTarget(
        spec=f"{SPEC_MOUNT}/spec.yaml", variant=variant.name, output=output, run_id=run_id,
        endpoint_url=url, api=variant_api(variant) if url is not None else None, verify=verify,
    )  # fmt: skip


def _named(variant: Variant, verify: int | None) -> Variant:
    """What the children are named and labelled after: the variant, or its fleet of ``verify``."""
    return variant if verify is None else fleet_variant(variant, verify)


def _add_pull_secrets(pod: dict[str, Any], cfg: OperatorConfig) -> None:
    if cfg.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in cfg.image_pull_secrets]


def _project_pod(cfg: OperatorConfig, containers: list[dict[str, Any]], bench: Benchmark) -> dict[str, Any]:
    pod = {
        "serviceAccountName": runner_name(bench),
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": [_spec_volume(bench)],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    _add_pull_secrets(pod, cfg)
    return pod


def _job(
    bench: Benchmark, uid: str, name: str, component: str, *, variant: str | None, pod: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    """A Job owned by the Benchmark whose pods carry the same labels as the Job."""
    template = {"metadata": {"labels": labels(bench, component, variant), "annotations": DO_NOT_DISRUPT}, "spec": pod}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(bench, uid, name, component, variant),
        "spec": {**spec, "template": template},
    }


def loadgen_master_job(
    bench: Benchmark, variant: Variant, uid: str, run_id: str, cfg: OperatorConfig, *, verify: int | None = None
) -> dict[str, Any]:
    # --outcome-file: the reason a run failed, as one line in the status (not the log's tail).
    # --ready-timeout: how long to wait for a model server that went away mid-run
    # (load.endpointRetries): a crashed pod needs its restart back-off plus reloading its weights.
    # An existing endpoint keeps the default 60 s, so that a wrong URL fails fast.
    args = [
        "loadgen",
        *loadgen_master_args(
            _loadgen_target(bench, variant, run_id, verify), bind_host="0.0.0.0", master_port=LOCUST_PORT,
            expect_workers=bench.spec.load.workers, outcome_file=TERMINATION_LOG,
            ready_timeout=ENDPOINT_RECOVERY_S if variant.endpoint is None else None,
        ),
    ]  # fmt: skip
    container = _project_container(cfg, "master", args, _loadgen_env(bench, variant, cfg))
    container["ports"] = [{"name": "locust", "containerPort": LOCUST_PORT}]
    container["resources"] = cfg.resources_of("loadgenMaster")
    # backoffLimit 0: a re-run master would start the stages over; fail and say so instead.
    named = _named(variant, verify)
    return _job(
        bench,
        uid,
        master_name(bench, named),
        "loadgen-master",
        variant=named.name,
        pod=_project_pod(cfg, [container], bench),
        backoffLimit=0,
    )


def loadgen_master_service(bench: Benchmark, variant: Variant, uid: str) -> dict[str, Any]:
    """The master's address for the workers (``variant``: as named, the fleet for a verification)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(bench, uid, master_name(bench, variant), "loadgen-master", variant.name),
        "spec": {
            "selector": {
                LABEL_BENCHMARK: bench.metadata.name,
                LABEL_VARIANT: variant.name,
                LABEL_COMPONENT: "loadgen-master",
            },
            "ports": [{"name": "locust", "port": LOCUST_PORT, "targetPort": LOCUST_PORT}],
        },
    }


def loadgen_workers_job(
    bench: Benchmark, variant: Variant, uid: str, run_id: str, cfg: OperatorConfig, *, verify: int | None = None
) -> dict[str, Any]:
    workers = bench.spec.load.workers
    ns = bench.metadata.namespace or "default"
    named = _named(variant, verify)
    master = f"{master_name(bench, named)}.{ns}.svc"
    args = [
        "loadgen",
        *loadgen_worker_args(
            _loadgen_target(bench, variant, run_id, verify), master_host=master, master_port=LOCUST_PORT,
            metrics_port=METRICS_PORT, worker_id=None,
        ),
    ]  # fmt: skip
    env = [
        {"name": "FMBENCH_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *_loadgen_env(bench, variant, cfg),
    ]
    container = _project_container(cfg, "worker", args, env)
    container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
    container["resources"] = cfg.resources_of("loadgenWorker")
    pod = _project_pod(cfg, [container], bench)
    dataset = bench.spec.workload.dataset
    configmap = dataset.configmap if dataset is not None else None
    if configmap is not None:  # the workers read the prompts (the master does not)
        name, key = configmap
        pod["volumes"].append({"name": "dataset", "configMap": {"name": name, "items": [{"key": key, "path": key}]}})
        container["volumeMounts"].append({"name": "dataset", "mountPath": f"{DATASETS_DIR}/{name}", "readOnly": True})
    return _job(
        bench, uid, workers_name(bench, named), "loadgen-worker", variant=named.name, pod=pod,
        parallelism=workers, completions=workers, backoffLimit=0,
    )  # fmt: skip


# -- analysis --------------------------------------------------------------------------------------


def analysis_job(
    bench: Benchmark,
    uid: str,
    run_id: str,
    cfg: OperatorConfig,
    *,
    ran_on: Mapping[str, Sequence[str]] | None = None,
    bought: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Runs ``fmbench-k8s analyze``; its compact summary JSON is the container's termination message.
    ``ran_on``, ``bought``: the instance types and capacity types of the nodes each variant's model
    server pods ran on, priced by the analysis."""
    uri = run_uri(bench, run_id)
    args = analyze_args(
        spec=f"{SPEC_MOUNT}/spec.yaml", records=uri, run=run_id, output=uri, summary_file=TERMINATION_LOG,
        prometheus_url=bench.spec.prometheus.url if bench.spec.prometheus else None, ran_on=ran_on, bought=bought,
    )  # fmt: skip
    env = _runner_env(bench, cfg)
    judging = bench.spec.evaluation.judging if bench.spec.evaluation is not None else None
    keys = [(judge_key_env(j.name), j.api_key_secret_ref) for j in (judging.judges if judging is not None else [])]
    embedding = bench.spec.evaluation.embedding if bench.spec.evaluation is not None else None
    keys += [(EMBEDDING_KEY_ENV, embedding.api_key_secret_ref)] if embedding is not None else []
    for name, ref in keys:
        if ref is not None:  # the reference only: the key never passes through the operator
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    container = _project_container(cfg, "analysis", args, env)
    container["resources"] = cfg.resources_of("analysis")
    container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})  # matplotlib's cache
    pod = _project_pod(cfg, [container], bench)
    pod["volumes"].append({"name": "tmp", "emptyDir": {}})
    return _job(bench, uid, analysis_name(bench), "analysis", variant=None, pod=pod, backoffLimit=1)


def data_plane_children(bench: Benchmark, uid: str, run_id: str, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Every load-generation child of every variant (the Running phase)."""
    out = []
    for v in bench.spec.variants:
        out += [
            loadgen_master_service(bench, v, uid),
            loadgen_master_job(bench, v, uid, run_id, cfg),
            loadgen_workers_job(bench, v, uid, run_id, cfg),
        ]
    return out


def fleet_children(
    bench: Benchmark, variant: Variant, uid: str, cfg: OperatorConfig, *, instances: int
) -> list[dict[str, Any]]:
    """The verify phase's fleet: ``instances`` replicas of the variant behind one Service."""
    fleet = fleet_variant(variant, instances)
    return [server_deployment(bench, fleet, uid, cfg), server_service(bench, fleet, uid)]


def fleet_load_children(
    bench: Benchmark, variant: Variant, uid: str, run_id: str, cfg: OperatorConfig, *, instances: int
) -> list[dict[str, Any]]:
    """The load generator of the verification of ``instances`` replicas of the variant."""
    return [
        loadgen_master_service(bench, fleet_variant(variant, instances), uid),
        loadgen_master_job(bench, variant, uid, run_id, cfg, verify=instances),
        loadgen_workers_job(bench, variant, uid, run_id, cfg, verify=instances),
    ]


def scrape_config_name(bench: Benchmark, variant: Variant) -> str:
    return child_name(bench.metadata.name, variant.name, "metrics")


def scraped_endpoints(bench: Benchmark, cfg: OperatorConfig) -> list[Variant]:
    """Endpoint variants whose server metrics the cluster's Prometheus scrapes for the run."""
    if not cfg.scrape_endpoints:
        return []
    return [v for v in bench.spec.variants if v.endpoint is not None and v.endpoint.metrics_target is not None]


def endpoint_scrape_config(bench: Benchmark, variant: Variant, uid: str, cfg: OperatorConfig) -> dict[str, Any]:
    """A Prometheus Operator ScrapeConfig for an endpoint variant's /metrics: its series get the
    benchmark and variant labels the analysis and the dashboards select by, as the model server
    pods' get them from the chart's PodMonitor."""
    assert variant.endpoint is not None and variant.endpoint.metrics_target is not None
    url = urlsplit(variant.endpoint.metrics_target)
    meta = _meta(bench, uid, scrape_config_name(bench, variant), "server-metrics", variant.name)
    meta["labels"] = {**dict(cfg.monitor_labels), **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "ScrapeConfig",
        "metadata": meta,
        "spec": {
            "scheme": url.scheme.upper(),
            "metricsPath": url.path or "/metrics",
            "scrapeInterval": cfg.scrape_interval,
            "staticConfigs": [
                {
                    "targets": [url.netloc.rpartition("@")[2]],  # never a user:password@ of the URL
                    "labels": {"benchmark": bench.metadata.name, "variant": variant.name},
                }
            ],
        },
    }


def server_children(bench: Benchmark, uid: str, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Model server Deployments and Services, and the scrape of endpoints' metrics (the Deploying phase)."""
    out = [runner_service_account(bench, uid, cfg), spec_configmap(bench, uid)]
    for v in bench.spec.variants:
        if v.engine is not None:
            out += [server_deployment(bench, v, uid, cfg), server_service(bench, v, uid)]
    out += [endpoint_scrape_config(bench, v, uid, cfg) for v in scraped_endpoints(bench, cfg)]
    return out
