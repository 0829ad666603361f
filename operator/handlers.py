"""kopf wiring, and nothing else: every decision is made by ``reconcile`` (pure).

Run with ``fmbench-k8s operator`` or ``kopf run -m fmbench_k8s.operator.handlers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from fmbench_k8s.api.benchmark import GROUP, PLURAL, VERSION, Benchmark, SpecError, parse_benchmark
from fmbench_k8s.operator.actions import Actions, Denials, RejectedError, serves
from fmbench_k8s.operator.builders import DEFAULT_RESOURCES, OperatorConfig, Resources
from fmbench_k8s.operator.leader import ElectionConfig, Elector
from fmbench_k8s.operator.observe import Reader, observe
from fmbench_k8s.operator.reconcile import Decision, Observation, reconcile, rejected

TERMINAL = ("Succeeded", "Failed")


def config_from_env(env: dict[str, str] | None = None) -> tuple[OperatorConfig, float, float]:
    """Operator settings (the Helm chart sets these variables)."""
    env = dict(os.environ if env is None else env)
    pairs = (kv.partition("=") for kv in env.get("FMBENCH_RUNNER_SA_ANNOTATIONS", "").split(",") if "=" in kv)
    annotations = tuple((key.strip(), value.strip()) for key, _, value in pairs)
    secrets = _names(env.get("FMBENCH_IMAGE_PULL_SECRETS", ""))
    cfg = OperatorConfig(
        image=env.get("FMBENCH_IMAGE", OperatorConfig.image),
        image_pull_policy=env.get("FMBENCH_IMAGE_PULL_POLICY", OperatorConfig.image_pull_policy),
        service_account_annotations=annotations,
        image_pull_secrets=secrets,
        resources=runner_resources(env.get("FMBENCH_RUNNER_RESOURCES", "")),
        runner_env=tuple(json.loads(env.get("FMBENCH_RUNNER_ENV") or "[]")),
        allowed_toleration_keys=_names(env.get("FMBENCH_ALLOWED_TOLERATION_KEYS", "")),
        allowed_node_selector_keys=_names(env.get("FMBENCH_ALLOWED_NODE_SELECTOR_KEYS", "")),
        scrape_endpoints=env.get("FMBENCH_SCRAPE_ENDPOINTS", "false").lower() == "true",
        monitor_labels=tuple(sorted(json.loads(env.get("FMBENCH_MONITOR_LABELS") or "{}").items())),
        scrape_interval=env.get("FMBENCH_SCRAPE_INTERVAL", OperatorConfig.scrape_interval),
        karpenter=env.get("FMBENCH_KARPENTER", "false").lower() == "true",
    )
    return (
        cfg,
        float(env.get("FMBENCH_UNSCHEDULABLE_GRACE_SECONDS", "60")),
        float(env.get("FMBENCH_INTERVAL_SECONDS", "2")),
    )


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list, as the chart passes lists."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def runner_resources(text: str) -> dict[str, Resources]:
    """FMBENCH_RUNNER_RESOURCES (JSON, the chart's runner.resources) over the defaults; a component
    given replaces its default whole."""
    out = dict(DEFAULT_RESOURCES)
    if not text.strip():
        return out
    given = json.loads(text)
    if not isinstance(given, dict) or not set(given) <= set(out):
        raise ValueError(f"FMBENCH_RUNNER_RESOURCES: an object with keys among {sorted(out)}, got {text[:200]!r}")
    out.update({k: v for k, v in given.items() if v})
    return out


_CFG, _GRACE, _INTERVAL = config_from_env()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from kubernetes import client, config

    # Our own keys under our API group, not kopf's defaults.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.posting.level = logging.INFO
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.api_client = client.ApiClient()
    memo.reader = Reader(memo.api_client)
    memo.actions = Actions(memo.api_client)
    memo.denials = Denials()
    global _CFG  # noqa: PLW0603 - settled once, before the first tick
    if _CFG.scrape_endpoints and not serves(memo.api_client, "ScrapeConfig"):
        logging.getLogger(__name__).warning(
            "monitoring.coreos.com/v1alpha1 ScrapeConfig is not served: endpoint variants' server metrics "
            "will not be scraped (install the Prometheus Operator's CRDs, or set monitoring.endpoints.enabled=false)"
        )
        _CFG = dataclasses.replace(_CFG, scrape_endpoints=False)


@kopf.on.startup()
async def elect(memo: kopf.Memo, **_: Any) -> None:
    """With leader election on (``run --leader-elect``), contend for the Lease in the background;
    ``tick`` acts only while this replica holds it."""
    election: ElectionConfig | None = memo.get("election")
    if election is not None:
        memo.elector = Elector(memo.api_client, election)
        memo.election_task = asyncio.create_task(memo.elector.run(), name="leader election")


@kopf.on.cleanup()
async def resign(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("election_task")
    if task is not None:
        task.cancel()
        await asyncio.to_thread(memo.elector.release)


@kopf.timer(GROUP, VERSION, PLURAL, interval=_INTERVAL, initial_delay=0, sharp=False)
def tick(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    elector: Elector | None = memo.get("elector")
    if elector is not None and not elector.leading:
        return  # a standby: kopf keeps its caches warm, the leader acts
    phase = (body.get("status") or {}).get("phase")
    if phase in TERMINAL:
        return
    raw = dict(body)
    try:
        bench = parse_benchmark({k: raw[k] for k in ("apiVersion", "kind", "metadata", "spec")}, "Benchmark")
    except SpecError as err:  # the API server accepted it, so our CRD is older than this operator
        patch.status["phase"] = "Failed"
        patch.status["message"] = "; ".join(err.problems)[:2000]
        kopf.event(body, type="Warning", reason="InvalidSpec", message=patch.status["message"])
        return
    namespace = str(body.metadata.namespace)
    obs = observe(bench, raw, memo.reader, datetime.now(UTC), _GRACE)
    decision = reconcile(bench, obs, _CFG)
    # Children first, status last: a crash in between repeats idempotent creates, never skips one.
    carried = _create(decision, bench, obs, namespace=namespace, memo=memo, logger=logger)
    if carried is None:
        return  # the next tick creates again; the status waits for it
    decision = carried
    for kind, name in decision.delete:
        if memo.actions.delete(namespace, kind, name):
            logger.info("deleted %s/%s", kind, name)
    if decision.status != obs.status:
        patch.status.update(decision.status)
    for etype, reason, message in decision.events:
        kopf.event(body, type=etype, reason=reason, message=message)


def _create(
    decision: Decision, bench: Benchmark, obs: Observation, *, namespace: str, memo: kopf.Memo, logger: kopf.Logger
) -> Decision | None:
    """Creates the decision's children; the decision to go on with: the same one, the run's failure
    when the API server refuses a child, or None while an RBAC denial is within its grace."""
    try:
        for manifest in decision.create:
            if memo.actions.create(namespace, manifest):
                logger.info("created %s/%s", manifest["kind"], manifest["metadata"]["name"])
    except RejectedError as err:
        lasted = memo.denials.note(obs.uid, obs.now) if err.denied else None
        if lasted is not None and lasted < memo.denials.grace:
            if not lasted:
                logger.warning("%s; retrying for %s before the run fails", err, memo.denials.grace)
            return None
        memo.denials.clear(obs.uid)
        return rejected(bench, obs, _CFG, str(err))
    memo.denials.clear(obs.uid)
    return decision
