"""Command line of the simulator (``python -m fmbench_k8s.simulator``).

Prints ``simulator listening on http://HOST:PORT`` (flushed) once the socket
is bound, so a parent process can wait for that line, then serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from fmbench_k8s.simulator.guard import Limits
from fmbench_k8s.simulator.params import SimParams
from fmbench_k8s.simulator.profiles import PROFILES, UnknownInstanceTypeError, get_profile
from fmbench_k8s.simulator.server import run

DEFAULT_MODEL = "simulated-model"

# (flag, SimParams field, type); each overrides the profile (or the defaults).
_OVERRIDES: tuple[tuple[str, str, type], ...] = (
    ("--max-num-seqs", "max_num_seqs", int),
    ("--prefill-base-s", "prefill_base_s", float),
    ("--prefill-s-per-token", "prefill_s_per_token", float),
    ("--decode-base-s", "decode_base_s", float),
    ("--batch-slowdown", "batch_slowdown", float),
    ("--jitter-sigma", "jitter_sigma", float),
    ("--seed", "seed", int),
    ("--error-rate", "error_rate", float),
    ("--error-status", "error_status", int),
    ("--reasoning-tokens", "reasoning_tokens", int),
    ("--prefix-cache-blocks", "prefix_cache_blocks", int),
    ("--answer", "answer", str),
    ("--image-patch-px", "image_patch_px", int),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmbench-k8s simulate",
        description="OpenAI/TGI/Triton-compatible model-server simulator with a documented timing model.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    parser.add_argument(
        "--profile",
        metavar="INSTANCE_TYPE",
        help="start from an illustrative instance profile (see --list-profiles)",
    )
    parser.add_argument("--list-profiles", action="store_true", help="print the profiles and exit")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=Limits.max_connections,
        help="connections beyond this are closed at once (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=Limits.idle_timeout_s,
        help="seconds a connection may wait for a request's headers, or its body (default: %(default)s)",
    )
    for flag, name, kind in _OVERRIDES:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=f"override SimParams.{name}")
    return parser


def params_from_args(args: argparse.Namespace) -> SimParams:
    """Profile (or defaults) with the explicitly given flags applied on top."""
    base = get_profile(args.profile).params if args.profile else SimParams()
    changes = {name: getattr(args, name) for _, name, _ in _OVERRIDES if getattr(args, name) is not None}
    return dataclasses.replace(base, **changes)


def _profiles_table() -> str:
    head = f"{'instance_type':<14} {'seqs':>4} {'pf_base':>7} {'pf/token':>9} {'decode':>7} {'slow':>5}"
    lines = ["ILLUSTRATIVE profiles (not measurements); times in seconds", head]
    for p in PROFILES.values():
        s = p.params
        lines.append(
            f"{p.instance_type:<14} {s.max_num_seqs:>4} {s.prefill_base_s:>7.3f} "
            f"{s.prefill_s_per_token:>9.5f} {s.decode_base_s:>7.3f} {s.batch_slowdown:>5.2f}  {p.accelerator}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_profiles:
        print(_profiles_table())
        return 0
    try:
        params = params_from_args(args)
    except (UnknownInstanceTypeError, ValueError) as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2

    def ready(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"simulator listening on http://{shown}:{port}", flush=True)

    if args.max_connections < 1 or not args.idle_timeout > 0:
        parser.error("--max-connections and --idle-timeout must be positive")
    limits = Limits(args.max_connections, idle_timeout_s=args.idle_timeout, body_timeout_s=args.idle_timeout)
    run(args.host, args.port, params, args.model, on_ready=ready, limits=limits)
    return 0
