"""Start the operator: kopf's runner with our handlers, namespaced or cluster-wide."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmbench-k8s operator", description="run the Benchmark operator")
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch these namespaces (repeatable)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint")
    parser.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    parser.add_argument(
        "--peering", default=None, help="kopf peering object (needs kopf's peering CRDs); one replica acts at a time"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        parser.error("give --namespace NS (repeatable) or --all-namespaces")

    import kopf

    from fmbench_k8s.operator import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
        standalone=args.standalone,
        peering_name=args.peering,
    )
    return 0
