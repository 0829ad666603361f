"""Helpers for tests that run against the local test control plane.

Everything here talks to the cluster with the Python ``kubernetes`` client
only (no kubectl), so it works on any machine that can build the binaries.

* :class:`Cluster` - a handle on a running cluster (kubeconfig + helpers); it
  is what the ``cluster`` pytest fixture yields.
* EKS-shaped fake nodes: :func:`load_node_groups`, :func:`node_manifests`,
  :func:`create_nodes` (data in ``nodes.yaml``).
* :func:`complete_pod` - finish a pod the way a kubelet would (kwok keeps pods
  Running; this sets phase Succeeded/Failed through the status subresource).
* :func:`apply_manifest` - server-side apply of YAML/dicts (CRDs are waited
  on until Established); :func:`dry_run_create` - server-side validation of an
  object without persisting it.
* :func:`wait_for` - poll a condition with a deadline.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s  # type: ignore[import-untyped, unused-ignore]
from kubernetes import config as k8s_config  # type: ignore[import-untyped, unused-ignore]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "KWOK_ANNOTATION",
    "NODES_YAML",
    "ApiException",
    "ApiResource",
    "Cluster",
    "NodeGroup",
    "WaitTimeoutError",
    "apply_manifest",
    "complete_pod",
    "create_nodes",
    "discover",
    "dry_run_create",
    "load_manifests",
    "load_node_groups",
    "node_manifests",
    "raw_request",
    "wait_for",
]

HERE = Path(__file__).resolve().parent
NODES_YAML = HERE / "nodes.yaml"
#: kwok manages exactly the nodes carrying this annotation (see controlplane.py).
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
FIELD_MANAGER = "fmbench-tests"

JSON = dict[str, Any]
T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A polled condition did not hold before its deadline."""


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    description: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Raises :class:`WaitTimeoutError` (an ``AssertionError``) after ``timeout`` seconds,
    quoting the last value seen so failures explain themselves.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {description}; last value: {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------- raw REST


def raw_request(
    api_client: Any,
    method: str,
    path: str,
    body: object = None,
    *,
    query: Sequence[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> JSON:
    """One REST call with a plain-dict body and a plain-dict result.

    The generated client validates bodies against its pydantic models, which
    reject partial objects (e.g. a Node without nodeInfo) and cannot send
    apply patches; this bypasses the models but keeps the client's TLS and
    auth. Non-2xx answers raise :class:`ApiException`.
    """
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    payload = body
    if payload is not None and not content_type.endswith("json") and not isinstance(payload, (str, bytes)):
        payload = json.dumps(payload)  # JSON is YAML: fine for application/apply-patch+yaml
    if hasattr(api_client, "param_serialize"):  # generated client >= v35 (pydantic models)
        m, url, hdrs, _, _ = api_client.param_serialize(
            method.upper(), path, query_params=list(query), header_params=headers, auth_settings=["BearerToken"]
        )
        resp = api_client.call_api(m, url, header_params=hdrs, body=payload)
        data = resp.read()
    else:  # classic client: serializes dicts itself (apply patches too), raises ApiException itself
        resp = api_client.call_api(
            path,
            method.upper(),
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        data = resp.data
    if not 200 <= resp.status <= 299:
        raise ApiException(http_resp=resp)
    result: JSON = json.loads(data) if data else {}
    return result


@dataclass(frozen=True)
class ApiResource:
    """Where a kind lives in the REST API."""

    group_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        prefix = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        tail = f"/{name}" if name else ""
        sub = f"/{subresource}" if subresource else ""
        return f"{prefix}{ns}/{self.plural}{tail}{sub}"


def discover(api_client: Any, api_version: str, kind: str) -> ApiResource:
    """Look ``kind`` up in the discovery document of ``api_version``."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        doc = raw_request(api_client, "GET", prefix)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(f"API group/version {api_version} is not served") from exc
        raise
    for res in doc.get("resources", []):
        if res.get("kind") == kind and "/" not in res.get("name", ""):
            return ApiResource(api_version, str(res["name"]), bool(res.get("namespaced")))
    raise LookupError(f"{api_version} serves no kind {kind}")


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeGroup:
    """One EKS node group: ``count`` identical nodes of one instance type."""

    name: str
    instance_type: str
    count: int = 1
    capacity: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    zones: Sequence[str] = ("us-west-2a",)

    @property
    def accelerators(self) -> dict[str, str]:
        """Extended resources (``nvidia.com/gpu``, ``aws.amazon.com/neuron``...)."""
        return {k: v for k, v in self.allocatable.items() if "/" in k}


def _str_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def load_node_groups(path: Path | str = NODES_YAML) -> list[NodeGroup]:
    """Read node groups from ``nodes.yaml`` (defaults merged into each group)."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, Mapping) or not isinstance(doc.get("nodeGroups"), list):
        raise ValueError(f"{path}: expected a mapping with a 'nodeGroups' list")
    defaults = doc.get("defaults") or {}
    default_labels = _str_map(defaults.get("labels"), "defaults.labels")
    default_zones = [str(z) for z in defaults.get("zones") or ["us-west-2a"]]
    groups: list[NodeGroup] = []
    for raw in doc["nodeGroups"]:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path}: node group must be a mapping, got {raw!r}")
        name = str(raw["name"])
        taints = raw.get("taints") or []
        groups.append(
            NodeGroup(
                name=name,
                instance_type=str(raw["instanceType"]),
                count=int(raw.get("count", 1)),
                capacity=_str_map(raw.get("capacity"), f"{name}.capacity"),
                allocatable=_str_map(raw.get("allocatable") or raw.get("capacity"), f"{name}.allocatable"),
                labels={**default_labels, **_str_map(raw.get("labels"), f"{name}.labels")},
                taints=[_str_map(t, f"{name}.taints[]") for t in taints],
                zones=[str(z) for z in raw.get("zones") or default_zones],
            )
        )
    return groups


def node_manifests(groups: Iterable[NodeGroup]) -> list[JSON]:
    """Node objects for ``groups``; node ``i`` of a group is ``<group>-<i>``."""
    nodes: list[JSON] = []
    for group in groups:
        for i in range(group.count):
            name = f"{group.name}-{i}"
            zone = group.zones[i % len(group.zones)]
            labels = {
                **group.labels,
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": group.instance_type,
                "eks.amazonaws.com/nodegroup": group.name,
                "karpenter.k8s.aws/instance-family": group.instance_type.split(".")[0],
                "karpenter.k8s.aws/instance-size": group.instance_type.split(".")[-1],
                "topology.kubernetes.io/zone": zone,
                "type": "kwok",
            }
            capacity = dict(group.capacity or group.allocatable)
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {
                            KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1],
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {
                        "providerID": f"aws:///{zone}/i-{hashlib.sha256(name.encode()).hexdigest()[:17]}",
                        "taints": [dict(t) for t in group.taints],
                    },
                    "status": {
                        "capacity": capacity,
                        "allocatable": dict(group.allocatable),
                        "nodeInfo": {
                            "architecture": labels.get("kubernetes.io/arch", "amd64"),
                            "operatingSystem": labels.get("kubernetes.io/os", "linux"),
                            "osImage": "Amazon Linux 2023 (kwok)",
                        },
                    },
                }
            )
    return nodes


def create_nodes(
    api_client: Any,
    groups: Iterable[NodeGroup] | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 60.0,
) -> list[str]:
    """Create (or replace) the kwok nodes of ``groups`` (default: nodes.yaml).

    Returns the node names. With ``wait_ready`` it waits until kwok has
    marked every node Ready and the node lifecycle controller has removed the
    ``node.kubernetes.io/not-ready`` taint, so the scheduler can use them.
    """
    core: Any = k8s.CoreV1Api(api_client)
    manifests = node_manifests(load_node_groups() if groups is None else groups)
    for body in manifests:
        try:
            raw_request(api_client, "POST", "/api/v1/nodes", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            node_name = str(body["metadata"]["name"])
            core.delete_node(node_name)
            wait_for(
                functools.partial(_absent, functools.partial(core.read_node, node_name)),
                timeout=timeout,
                description=f"old node {node_name} to go away",
            )
            raw_request(api_client, "POST", "/api/v1/nodes", body)
    names = [str(m["metadata"]["name"]) for m in manifests]
    if wait_ready:
        wanted = set(names)

        def all_ready() -> bool:
            ready = {
                n.metadata.name
                for n in core.list_node().items
                if _condition(n.status.conditions, "Ready")
                # the node lifecycle controller lifts the not-ready taint a moment later
                and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or ())
            }
            return wanted <= ready

        wait_for(all_ready, timeout=timeout, description=f"{len(names)} kwok nodes to become Ready and untainted")
    return names


def _absent(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _condition(conditions: Sequence[Any] | None, ctype: str, status: str = "True") -> bool:
    return any(c.type == ctype and c.status == status for c in conditions or ())


# --------------------------------------------------------------------------- pods


def complete_pod(
    api_client: Any,
    namespace: str,
    name: str,
    *,
    succeeded: bool = True,
    exit_code: int | None = None,
    message: str = "",
    reason: str | None = None,
    retries: int = 10,
) -> JSON:
    """Terminate every container of a pod and set phase Succeeded or Failed.

    This is what a kubelet reports when a Job's container exits. ``message``
    becomes each container's ``state.terminated.message`` (the termination
    message a Job's pod writes to /dev/termination-log). Returns the updated
    pod as a dict.
    """
    code = exit_code if exit_code is not None else (0 if succeeded else 1)
    why = reason or ("Completed" if succeeded else "Error")
    for attempt in range(retries):
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        pod = raw_request(api_client, "GET", path)
        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: JSON = pod.setdefault("status", {})
        old = {cs["name"]: cs for cs in status.get("containerStatuses") or []}
        statuses = []
        for container in pod["spec"]["containers"]:
            prev = old.get(container["name"], {})
            started = (prev.get("state", {}).get("running") or {}).get("startedAt", now)
            terminated: JSON = {"exitCode": code, "reason": why, "startedAt": started, "finishedAt": now}
            if message:
                terminated["message"] = message
            statuses.append(
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": prev.get("imageID", ""),
                    "containerID": prev.get("containerID", ""),
                    "ready": False,
                    "started": False,
                    "restartCount": prev.get("restartCount", 0),
                    "state": {"terminated": terminated},
                }
            )
        status["containerStatuses"] = statuses
        status["phase"] = "Succeeded" if succeeded else "Failed"
        conditions = [c for c in status.get("conditions") or [] if c.get("type") not in ("Ready", "ContainersReady")]
        for ctype in ("Ready", "ContainersReady"):
            conditions.append({"type": ctype, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now})
        status["conditions"] = conditions
        try:
            return raw_request(api_client, "PUT", f"{path}/status", pod)
        except ApiException as exc:
            if exc.status == 409 and attempt + 1 < retries:
                continue
            raise
    raise RuntimeError("unreachable")


# --------------------------------------------------------------------------- manifests


def load_manifests(source: Path | str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[JSON]:
    """Objects from a YAML file path, a YAML string, a dict, or a list of dicts.

    ``List`` kinds are flattened; empty YAML documents are dropped.
    """
    docs: list[Any]
    if isinstance(source, Mapping):
        docs = [source]
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).is_file()):
        docs = list(yaml.safe_load_all(Path(source).read_text()))
    elif isinstance(source, str):
        docs = list(yaml.safe_load_all(source))
    else:
        docs = list(source)
    out: list[JSON] = []
    for doc in docs:
        if not doc:
            continue
        if not isinstance(doc, Mapping) or "apiVersion" not in doc or "kind" not in doc:
            raise ValueError(f"not a Kubernetes object: {doc!r:.200}")
        if doc["kind"].endswith("List") and "items" in doc:
            out.extend(load_manifests(doc["items"]))
        else:
            out.append(copy.deepcopy(dict(doc)))
    return out


def _crd_established(ext: Any, name: str) -> bool:
    return _condition(ext.read_custom_resource_definition(name).status.conditions, "Established")


def _locate(api_client: Any, obj: JSON, namespace: str | None) -> tuple[ApiResource, str | None]:
    res = discover(api_client, obj["apiVersion"], obj["kind"])
    ns = None
    if res.namespaced:
        ns = obj.get("metadata", {}).get("namespace") or namespace or "default"
        obj.setdefault("metadata", {})["namespace"] = ns
    return res, ns


def apply_manifest(
    api_client: Any,
    source: Path | str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    namespace: str | None = None,
    field_manager: str = FIELD_MANAGER,
    wait_established: float = 30.0,
) -> list[JSON]:
    """Server-side apply every object in ``source`` (see :func:`load_manifests`).

    Namespaced objects without a namespace go to ``namespace`` (or "default").
    CustomResourceDefinitions are waited on until Established, so their kinds
    can be used right after. Returns the applied objects as dicts.
    """
    applied: list[JSON] = []
    for obj in load_manifests(source):
        res, ns = _locate(api_client, obj, namespace)
        result = raw_request(
            api_client,
            "PATCH",
            res.path(ns, obj["metadata"]["name"]),
            obj,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        applied.append(result)
        if obj["kind"] == "CustomResourceDefinition" and wait_established:
            crd_name = obj["metadata"]["name"]
            ext: Any = k8s.ApiextensionsV1Api(api_client)
            wait_for(
                functools.partial(_crd_established, ext, crd_name),
                timeout=wait_established,
                description=f"CRD {crd_name} to be Established",
            )
    return applied


def dry_run_create(api_client: Any, namespace: str | None, body: Mapping[str, Any]) -> JSON:
    """Create ``body`` with ``dryRun=All``: full server-side defaulting,
    validation (OpenAPI schema, CEL rules) and admission, nothing persisted.

    Returns the object as the server would have stored it; raises
    :class:`ApiException` (status 422 for invalid objects, ``exc.body`` holds
    the server's explanation) otherwise.
    """
    obj = copy.deepcopy(dict(body))
    res, ns = _locate(api_client, obj, namespace)
    return raw_request(api_client, "POST", res.path(ns), obj, query=[("dryRun", "All"), ("fieldValidation", "Strict")])


# --------------------------------------------------------------------------- handle


class Cluster:
    """A running test cluster, identified by its admin kubeconfig.

    ``api_client()`` makes a new admin :class:`kubernetes.client.ApiClient`;
    ``api_client(token=...)`` one that authenticates with a bearer token
    (e.g. from :meth:`service_account_token`) to exercise RBAC.
    """

    def __init__(self, kubeconfig: Path | str, node_groups: Sequence[NodeGroup] = ()) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.node_groups: list[NodeGroup] = list(node_groups)
        self._admin: Any = None

    def configuration(self, token: str | None = None) -> Any:
        cfg = k8s.Configuration()
        load: Any = k8s_config.load_kube_config
        load(config_file=str(self.kubeconfig), client_configuration=cfg, persist_config=False)
        if token is not None:
            cfg.api_key = {"BearerToken": f"Bearer {token}"}
            cfg.refresh_api_key_hook = None
        return cfg

    def api_client(self, token: str | None = None) -> Any:
        return k8s.ApiClient(configuration=self.configuration(token))

    @property
    def admin(self) -> Any:
        """A shared admin ApiClient (created on first use)."""
        if self._admin is None:
            self._admin = self.api_client()
        return self._admin

    # Typed as Any so tests can pass plain dict bodies.
    def core(self, api_client: Any = None) -> Any:
        return k8s.CoreV1Api(api_client or self.admin)

    def apps(self, api_client: Any = None) -> Any:
        return k8s.AppsV1Api(api_client or self.admin)

    def batch(self, api_client: Any = None) -> Any:
        return k8s.BatchV1Api(api_client or self.admin)

    def rbac(self, api_client: Any = None) -> Any:
        return k8s.RbacAuthorizationV1Api(api_client or self.admin)

    def coordination(self, api_client: Any = None) -> Any:
        return k8s.CoordinationV1Api(api_client or self.admin)

    def custom(self, api_client: Any = None) -> Any:
        return k8s.CustomObjectsApi(api_client or self.admin)

    @property
    def server(self) -> str:
        return str(self.configuration().host)

    def complete_pod(self, namespace: str, name: str, **kwargs: Any) -> JSON:
        return complete_pod(self.admin, namespace, name, **kwargs)

    def apply_manifest(
        self, source: Path | str | Mapping[str, Any] | Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> list[JSON]:
        return apply_manifest(self.admin, source, **kwargs)

    def dry_run_create(self, namespace: str | None, body: Mapping[str, Any]) -> JSON:
        return dry_run_create(self.admin, namespace, body)

    def create_nodes(self, groups: Iterable[NodeGroup] | None = None, **kwargs: Any) -> list[str]:
        return create_nodes(self.admin, groups, **kwargs)

    def create_namespace(self, name: str) -> str:
        """Create a namespace and wait for its default ServiceAccount."""
        core: Any = k8s.CoreV1Api(self.admin)
        raw_request(
            self.admin,
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        wait_for(
            lambda: not _absent(lambda: core.read_namespaced_service_account("default", name)),
            timeout=30,
            description=f"default ServiceAccount in namespace {name}",
        )
        return name

    def kubeconfig_for_token(self, token: str, path: Path, user: str = "token-user") -> Path:
        """A copy of the admin kubeconfig that authenticates with ``token`` instead (e.g. a
        ServiceAccount's, to run a process with exactly that account's RBAC)."""
        config = yaml.safe_load(Path(self.kubeconfig).read_text())
        config["users"] = [{"name": user, "user": {"token": token}}]
        for ctx in config["contexts"]:
            ctx["context"]["user"] = user
        path.write_text(yaml.safe_dump(config))
        return path

    def service_account_token(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> str:
        """Create ServiceAccount ``name`` if needed and return a bound token for it."""
        sa_path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        try:
            raw_request(
                self.admin, "POST", sa_path, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        req = raw_request(
            self.admin,
            "POST",
            f"{sa_path}/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return str(req["status"]["token"])

    def wait_for(self, predicate: Callable[[], T | None], **kwargs: Any) -> T:
        return wait_for(predicate, **kwargs)

    def event_reasons(self, namespace: str, name: str) -> set[str]:
        """The reasons of the events about the object ``name`` in ``namespace``."""
        events = self.core().list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return {str(e.reason) for e in events}

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
