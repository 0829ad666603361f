"""Start the operator: kopf's runner with our handlers, namespaced or cluster-wide."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from fmbench_k8s.operator.leader import ElectionConfig


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ElectionConfig | None]:
    """The operator's flags, and its leader election settings (None without ``--leader-elect``)."""
    parser = argparse.ArgumentParser(prog="fmbench-k8s operator", description="run the Benchmark operator")
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch these namespaces (repeatable)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint")
    parser.add_argument("--standalone", action="store_true", help="no kopf peering (use --leader-elect for replicas)")
    parser.add_argument(
        "--peering", default=None, help="kopf peering object (needs kopf's peering CRDs): a dev operator pauses others"
    )
    parser.add_argument(
        "--leader-elect", action="store_true", help="run replicas: only the holder of a Lease acts, the others stand by"
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else the first --namespace)",
    )
    parser.add_argument("--lease-name", default=ElectionConfig.name, help="name of the Lease (default: %(default)s)")
    parser.add_argument(
        "--lease-duration",
        type=int,
        default=ElectionConfig.lease_duration_s,
        help="seconds a standby waits for an unrenewed Lease before taking over (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        parser.error("give --namespace NS (repeatable) or --all-namespaces")
    election = None
    if args.leader_elect:
        lease_namespace = args.lease_namespace or (args.namespace[0] if args.namespace else None)
        if not lease_namespace:
            parser.error("--leader-elect with --all-namespaces needs --lease-namespace (or $POD_NAMESPACE)")
        if args.lease_duration < 2:
            parser.error(f"--lease-duration: {args.lease_duration} is too short; give at least 2 seconds")
        election = ElectionConfig(lease_namespace, args.lease_name, lease_duration_s=args.lease_duration)
    return args, election


def _quiet_ticks(record: logging.LogRecord) -> bool:
    """kopf logs every successful timer run at INFO: a line per Benchmark per interval."""
    return record.getMessage() != "Timer 'tick' succeeded."


def main(argv: Sequence[str] | None = None) -> int:
    args, election = parse_args(argv)
    import kopf

    from fmbench_k8s.operator import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(_quiet_ticks)
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
        standalone=args.standalone,
        peering_name=args.peering,
        memo=kopf.Memo(election=election),
    )
    return 0
