"""Carry out a Decision against the API server: create-if-absent, delete-if-present."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

# kind → (client API class, create method, delete method)
_KINDS = {
    "ServiceAccount": ("CoreV1Api", "create_namespaced_service_account", "delete_namespaced_service_account"),
    "ConfigMap": ("CoreV1Api", "create_namespaced_config_map", "delete_namespaced_config_map"),
    "Service": ("CoreV1Api", "create_namespaced_service", "delete_namespaced_service"),
    "Deployment": ("AppsV1Api", "create_namespaced_deployment", "delete_namespaced_deployment"),
    "Job": ("BatchV1Api", "create_namespaced_job", "delete_namespaced_job"),
}
# Custom kinds: kind → (group, version, plural).
_CUSTOM = {"ScrapeConfig": ("monitoring.coreos.com", "v1alpha1", "scrapeconfigs")}


# Answers that repeating the same request cannot change: the object is invalid (400, 422) or
# not allowed (403: RBAC, quota, an admission policy). Others (429, 5xx, timeouts) are retried.
PERMANENT = (400, 403, 422)
# How the RBAC authorizer words its 403 (an admission plugin's reads "is forbidden: exceeded
# quota: ..." or "is forbidden: violates PodSecurity ..."): 'User "NAME" cannot VERB resource'.
_RBAC_DENIAL = re.compile(r'is forbidden: User "[^"]*" cannot ')


class RejectedError(Exception):
    """The API server refused to create a child; ``message`` is its answer. ``denied``: refused by
    RBAC, which can be a moment's answer (the API server's authorizer fills its cache after a
    restart; Helm or Argo CD may apply the operator's Role after the operator), so the caller may
    retry it for a while before it fails the run."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"the API server refused {kind} {name}: {message}")
        self.kind, self.name, self.message = kind, name, message
        self.denied = _RBAC_DENIAL.search(message) is not None


class Denials:
    """When each Benchmark's creates were first denied by RBAC: a denial is retried until denials
    have lasted ``grace``, and then it fails the run like any other refusal."""

    def __init__(self, grace: timedelta = timedelta(seconds=60)) -> None:
        self.grace = grace
        self._since: dict[str, datetime] = {}

    def note(self, uid: str, now: datetime) -> timedelta:
        """A denial at ``now``: how long this Benchmark's creates have been denied (zero at the first)."""
        return now - self._since.setdefault(uid, now)

    def clear(self, uid: str) -> None:
        """Its creates went through: a later denial starts a new grace."""
        self._since.pop(uid, None)


def _answer(err: Any) -> str:
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


class Actions:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._apis = {name: getattr(client, name)(api_client) for name in {v[0] for v in _KINDS.values()}}
        self._custom = client.CustomObjectsApi(api_client)

    def _method(self, kind: str, which: int) -> Any:
        if kind in _CUSTOM:
            group, version, plural = _CUSTOM[kind]
            if which == 1:
                return lambda namespace, body: self._custom.create_namespaced_custom_object(
                    group, version, namespace, plural, body
                )
            return lambda name, namespace, **kw: self._custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name, **kw
            )
        try:
            spec = _KINDS[kind]
        except KeyError:
            raise ValueError(f"the operator does not manage kind {kind!r}") from None
        return getattr(self._apis[spec[0]], spec[which])

    def create(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """True when created now, False when it already existed (deterministic names);
        RejectedError when the API server will never accept it."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._method(manifest["kind"], 1)(namespace, manifest)
            return True
        except ApiException as err:
            if err.status == 409:
                return False
            if err.status in PERMANENT:
                raise RejectedError(manifest["kind"], manifest["metadata"]["name"], _answer(err)) from err
            raise

    def delete(self, namespace: str, kind: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self._method(kind, 2)(name, namespace, propagation_policy="Background")
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise


def serves(api_client: Any, kind: str) -> bool:
    """Whether the API server serves a custom kind the operator may create (its CRD is installed)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    group, version, plural = _CUSTOM[kind]
    try:
        found = client.CustomObjectsApi(api_client).get_api_resources(group, version)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(r.name == plural for r in (found.resources or []))
