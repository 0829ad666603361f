"""Turn what the API server reports about a Benchmark's children into an Observation.

``diagnose_pods`` and ``job_state`` are pure (unit-tested on pod/job dicts); ``observe`` does the
reads. Everything read is a plain dict (``ApiClient.sanitize_for_serialization``) so the pure
parts never depend on the client's model classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fmbench_k8s.api.benchmark import Benchmark
from fmbench_k8s.api.spec import Variant
from fmbench_k8s.contract.verification import fleet_variant
from fmbench_k8s.operator import builders
from fmbench_k8s.operator.reconcile import JobState, Observation, VariantObservation

# Waiting reasons that will not fix themselves (ImagePullBackOff retries forever, but a wrong
# image name or missing pull secret needs a person).
FATAL_WAITING = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
)
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# The capacity type a node was bought at: Karpenter's label, or an EKS managed node group's.
EKS_CAPACITY_LABEL = "eks.amazonaws.com/capacityType"
_EKS_CAPACITY = {"ON_DEMAND": "on-demand", "SPOT": "spot", "CAPACITY_BLOCK": "reserved"}


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def diagnose_pods(pods: list[dict[str, Any]], now: datetime, unschedulable_grace_s: float) -> tuple[str, str] | None:
    """The first reason a model server pod cannot serve, or None.

    Unschedulable pods get a grace period: on EKS with Karpenter or the cluster autoscaler a new
    GPU node takes minutes, and a pending pod is how it is requested.
    """
    for pod in pods:
        status = pod.get("status") or {}
        name = (pod.get("metadata") or {}).get("name", "?")
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                since = _parse_time(cond.get("lastTransitionTime"))
                if since is None or (now - since).total_seconds() >= unschedulable_grace_s:
                    message = cond.get("message") or "no node fits"
                    accel = "nvidia.com/gpu" in message or "aws.amazon.com/neuron" in message
                    return ("InsufficientAccelerators" if accel else "Unschedulable", f"pod {name}: {message}")
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if waiting.get("reason") in FATAL_WAITING:
                detail = waiting.get("message") or waiting["reason"]
                if last:  # why it crashed: the exit code and the end of its log (FallbackToLogsOnError)
                    tail = " | ".join((last.get("message") or "").strip().splitlines()[-3:])[-400:]
                    detail = f"container {cs.get('name')} exited with code {last.get('exitCode')}" + (
                        f": {tail}" if tail else ""
                    )
                return (str(waiting["reason"]), f"pod {name}: {detail}")
            if last.get("reason") == "OOMKilled":
                return ("OOMKilled", f"pod {name}: container {cs.get('name')} was OOMKilled; choose a larger instance")
    return None


def diagnose_deployment(dep: dict[str, Any] | None) -> tuple[str, str] | None:
    """Pods the ReplicaSet could not even create (admission, quota, a rejected pod spec): the
    Deployment's ReplicaFailure condition carries the API server's answer; no pod will say it."""
    for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            name = (dep or {}).get("metadata", {}).get("name", "?")
            return ("FailedCreate", f"deployment {name}: {cond.get('message') or cond.get('reason')}")
    return None


def job_state(job: dict[str, Any] | None, pods: list[dict[str, Any]], refused: str | None = None) -> JobState | None:
    """A Job's outcome; ``message`` is the failure reason or the first pod's termination message.
    ``refused``: why the Job controller could not create its pods (its FailedCreate event: quota,
    admission); a Job has no condition for that, and would wait for pods until spec.timeouts.run."""
    if job is None:
        return None
    if refused is not None and not pods:
        return JobState(failed=True, refused=True, message=f"FailedCreate: {refused}"[:2000])
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    messages = [
        t["message"]
        for pod in pods
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
        if (t := (cs.get("state") or {}).get("terminated") or {}).get("message")
    ]
    if "Failed" in conditions or "FailureTarget" in conditions:
        cond = conditions.get("Failed") or conditions["FailureTarget"]
        detail = "; ".join(m for m in (cond.get("reason"), cond.get("message"), *messages[:1]) if m)
        return JobState(failed=True, message=detail[:2000])
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return JobState(succeeded=True, message=messages[0] if messages else None)
    return JobState(active=True)


class Reader:
    """The reads observe() needs, over the kubernetes client (namespaced, label-selected)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._serialize = api_client.sanitize_for_serialization
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)

    def _get(self, fn: Any, *args: Any) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            out: dict[str, Any] = self._serialize(fn(*args))
            return out
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get(self.apps.read_namespaced_deployment, name, ns)

    def job(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get(self.batch.read_namespaced_job, name, ns)

    def pods(self, ns: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        text = ",".join(f"{k}={v}" for k, v in selector.items())
        items: list[dict[str, Any]] = self._serialize(self.core.list_namespaced_pod(ns, label_selector=text))["items"]
        return items

    def refused(self, ns: str, job: dict[str, Any] | None) -> str | None:
        """The latest FailedCreate event of a Job that has no pod yet, or None."""
        status = (job or {}).get("status") or {}
        if job is None or any(status.get(k) for k in ("active", "succeeded", "failed", "ready")):
            return None
        name = job["metadata"]["name"]
        selector = f"involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate"
        events = self._serialize(self.core.list_namespaced_event(ns, field_selector=selector))["items"]
        latest = max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", default=None)
        return str(latest.get("message") or "pods refused") if latest is not None else None

    def job_state(self, ns: str, name: str, selector: dict[str, str]) -> JobState | None:
        job = self.job(ns, name)
        pods = self.pods(ns, selector)
        return job_state(job, pods, self.refused(ns, job) if not pods else None)

    def node_labels(self, name: str) -> dict[str, str]:
        node = self._get(self.core.read_node, name)
        return dict(((node or {}).get("metadata") or {}).get("labels") or {})


def capacity_type(labels: dict[str, str]) -> str | None:
    """on-demand, spot or reserved, from a node's labels; None when neither label says."""
    if value := labels.get(builders.CAPACITY_TYPE_LABEL):
        return value
    return _EKS_CAPACITY.get(labels.get(EKS_CAPACITY_LABEL, ""))


def observe(
    bench: Benchmark, body: dict[str, Any], reader: Reader, now: datetime, unschedulable_grace_s: float
) -> Observation:
    meta = body["metadata"]
    ns = meta["namespace"]
    name = bench.metadata.name
    status = dict(body.get("status") or {})
    phase = status.get("phase") or "Pending"

    def look(v: Variant, *, servers: bool, load: bool) -> VariantObservation:
        return _variant(bench, v, reader, ns, now=now, grace_s=unschedulable_grace_s, servers=servers, load=load)

    serving, running = phase in ("Deploying", "Running"), phase == "Running"
    variants = {v.name: look(v, servers=v.engine is not None and serving, load=running) for v in bench.spec.variants}
    fleet = None
    ver = status.get("verification") or {}
    if phase == "Verifying" and ver:
        variant = next(v for v in bench.spec.variants if v.name == ver["variant"])
        fleet = look(fleet_variant(variant, int(ver["instances"])), servers=True, load=True)
    analysis = None
    if phase == "Analyzing":
        selector = {builders.LABEL_BENCHMARK: name, builders.LABEL_COMPONENT: "analysis"}
        analysis = reader.job_state(ns, builders.analysis_name(bench), selector)
    return Observation(
        now=now,
        created=_parse_time(meta["creationTimestamp"]) or now,
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        status=status,
        variants=variants,
        analysis=analysis,
        fleet=fleet,
    )


def _variant(
    bench: Benchmark, v: Variant, reader: Reader, ns: str, *, now: datetime, grace_s: float, servers: bool, load: bool
) -> VariantObservation:
    """A variant's (or the verify phase's fleet's) model servers and load generator, as asked."""
    ready, problem = 0, None
    types: tuple[str, ...] = ()
    capacities: tuple[str, ...] = ()
    base = {builders.LABEL_BENCHMARK: bench.metadata.name, builders.LABEL_VARIANT: v.name}
    if servers:
        dep = reader.deployment(ns, builders.server_name(bench, v))
        ready = int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)
        pods = reader.pods(ns, {**base, builders.LABEL_COMPONENT: "server"})
        problem = diagnose_pods(pods, now, grace_s) or diagnose_deployment(dep)
        names = sorted({name for p in pods if (name := (p.get("spec") or {}).get("nodeName"))})
        nodes = [reader.node_labels(name) for name in names]
        types = tuple(sorted({t for labels in nodes if (t := labels.get(INSTANCE_TYPE_LABEL))}))
        capacities = tuple(sorted({c for labels in nodes if (c := capacity_type(labels))}))
    master = workers = None
    if load:
        master = reader.job_state(
            ns, builders.master_name(bench, v), {**base, builders.LABEL_COMPONENT: "loadgen-master"}
        )
        workers = reader.job_state(
            ns, builders.workers_name(bench, v), {**base, builders.LABEL_COMPONENT: "loadgen-worker"}
        )
    return VariantObservation(ready, types, problem, master, workers, capacities)
