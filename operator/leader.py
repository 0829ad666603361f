"""Leader election on a coordination.k8s.io Lease: of N operator replicas, exactly one acts.

kopf's peering pauses *every* operator when two share a priority, so it cannot give a hot standby.
This follows client-go's leaderelection instead: the holder renews the Lease every retry period;
a standby takes it over once the record has not changed for a whole lease duration, judged on its
own monotonic clock (never on the holder's timestamps, so clock skew cannot make two leaders).
Writes carry the read's resourceVersion, so of two replicas racing for a free Lease one wins.
The holder stops acting when it cannot renew within the renew deadline, which is shorter than the
lease duration: it has stopped before anyone else may start. A replica that stops cleanly
releases the Lease, so its standby takes over at once instead of after a lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("fmbench.leader")


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec that leader election reads and writes."""

    holder: str  # "" when released
    duration_s: int
    acquire_time: str
    renew_time: str
    transitions: int


def decide(current: LeaseRecord | None, unchanged_for: float, me: str, now: str, duration_s: int) -> LeaseRecord | None:
    """The record to write in order to lead, or None while another replica validly holds the Lease.

    ``unchanged_for``: seconds this replica has seen ``current`` unchanged, on its own clock.
    """
    if current is None:
        return LeaseRecord(me, duration_s, now, now, 0)
    if current.holder == me:
        return replace(current, duration_s=duration_s, renew_time=now)
    if current.holder and unchanged_for < current.duration_s:
        return None
    return LeaseRecord(me, duration_s, now, now, current.transitions + 1)


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str = "fmbench-operator"
    lease_duration_s: int = 15  # client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry

    @property
    def renew_deadline_s(self) -> float:
        return self.lease_duration_s * 2 / 3

    @property
    def retry_period_s(self) -> float:
        return max(0.5, self.lease_duration_s / 7.5)


def default_identity() -> str:
    """Pod name (the chart passes it as POD_NAME) plus a random suffix: a restarted pod is a new candidate."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # metav1.MicroTime wants 6 digits


def _record(lease: Any) -> LeaseRecord:
    spec = lease.spec

    def text(value: datetime | None) -> str:
        return _micro_time(value) if value is not None else ""

    return LeaseRecord(
        holder=spec.holder_identity or "",
        duration_s=int(spec.lease_duration_seconds or 0),
        acquire_time=text(spec.acquire_time),
        renew_time=text(spec.renew_time),
        transitions=int(spec.lease_transitions or 0),
    )


class Elector:
    """Holds or waits for the Lease; ``leading`` says whether this replica may act right now."""

    def __init__(self, api_client: Any, config: ElectionConfig, clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes import client

        self.config = config
        self.identity = default_identity()
        self.leading = False
        self._said: bool | None = None  # what the log last said, so that it says each change once
        self._api: Any = client.CoordinationV1Api(api_client)  # Any: it takes our plain-dict bodies
        self._clock = clock
        self._seen: tuple[LeaseRecord | None, float] = (None, clock())
        self._renewed_at = 0.0

    def _attempt(self) -> bool:
        """One read-decide-write round; True when this replica holds the Lease afterwards."""
        from kubernetes.client.exceptions import ApiException

        cfg = self.config
        timeout = cfg.retry_period_s * 2
        try:
            lease = self._api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=timeout)
        except ApiException as err:
            if err.status != 404:
                raise
            lease = None
        record = _record(lease) if lease is not None else None
        now = self._clock()
        if record is None or record != self._seen[0]:
            self._seen = (record, now)
        stamp = _micro_time(datetime.now(UTC))
        wanted = decide(record, now - self._seen[1], self.identity, stamp, cfg.lease_duration_s)
        if wanted is None:
            return False
        try:
            if lease is None:
                self._api.create_namespaced_lease(cfg.namespace, self._body(wanted), _request_timeout=timeout)
            else:
                body = self._body(wanted, lease.metadata.resource_version)
                self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body, _request_timeout=timeout)
        except ApiException as err:
            if err.status == 409:  # another replica wrote first: it leads
                return False
            raise
        self._seen = (wanted, self._clock())
        return True

    def _body(self, record: LeaseRecord, resource_version: str | None = None) -> dict[str, Any]:
        meta = {"name": self.config.name, "namespace": self.config.namespace}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {**meta, **({"resourceVersion": resource_version} if resource_version else {})},
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.duration_s,
                "acquireTime": record.acquire_time,
                "renewTime": record.renew_time,
                "leaseTransitions": record.transitions,
            },
        }

    def _set_leading(self, leading: bool, why: str) -> None:
        if leading != self._said:
            log.info("%s %s: %s", self.identity, "now leads" if leading else "stands by", why)
        self.leading = self._said = leading

    async def run(self) -> None:
        """Acquire, then renew, forever; on losing the Lease, stand by and try again."""
        cfg = self.config
        log.info("%s: leader election on Lease %s/%s", self.identity, cfg.namespace, cfg.name)
        while True:
            try:
                won = await asyncio.to_thread(self._attempt)
            except Exception as err:  # the API server is unreachable: keep leading until the deadline
                log.warning("leader election: %s", err)
                if self.leading and self._clock() - self._renewed_at > cfg.renew_deadline_s:
                    self._set_leading(False, f"could not renew within {cfg.renew_deadline_s:.0f} s")
            else:
                if won:
                    self._renewed_at = self._clock()
                    self._set_leading(True, f"holds Lease {cfg.namespace}/{cfg.name}")
                else:
                    holder = self._seen[0].holder if self._seen[0] else "nobody"
                    self._set_leading(False, f"Lease {cfg.namespace}/{cfg.name} is held by {holder}")
            await asyncio.sleep(cfg.retry_period_s)

    def release(self) -> None:
        """Give the Lease up (on a clean stop) so that a standby need not wait for it to expire."""
        if not self.leading:
            return
        from kubernetes.client.exceptions import ApiException

        self.leading = False
        cfg = self.config
        # A renewal still in flight when the run loop was cancelled may write the Lease between
        # our read and our write (409): read it again and release what is still ours.
        for _ in range(5):
            lease = self._api.read_namespaced_lease(cfg.name, cfg.namespace)
            record = _record(lease)
            if record.holder != self.identity:
                return
            now = _micro_time(datetime.now(UTC))
            released = replace(record, holder="", duration_s=1, renew_time=now)
            body = self._body(released, lease.metadata.resource_version)
            try:
                self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body)
            except ApiException as err:
                if err.status == 409:
                    continue
                raise
            log.info("%s released Lease %s/%s", self.identity, cfg.namespace, cfg.name)
            return
        log.warning("%s could not release Lease %s/%s: it kept changing; it expires instead", self.identity,
                    cfg.namespace, cfg.name)  # fmt: skip
