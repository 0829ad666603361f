"""Where a run lives and what the programs that make it are told: the run layout (run ids, the
run's folder, the keys inside it) and the one builder of the load generator's and the analysis's
command lines, used by the operator (in pod specs) and by the local runner (as processes).

A run's folder::

    <prefix>/<namespace>/<benchmark>/<runId>/
        spec.yaml                                  the Benchmark as run
        records/<variant>/<stage>-<worker>-<part>.parquet
        stages/<variant>.json                      StageInfo list (contract/records.py)
        stages/<variant>.search.json               the search's levels, verdicts and c*
        verify/{records,stages}/<variant>-x<N>/…   the verify phase's runs (contract/verification.py)
        report.json, report.html, report.md, stages.csv, variants.csv, plots/*.png

On a cluster ``<prefix>`` is ``s3://<bucket>/<report.s3.prefix>``; locally it is ``--output``
and ``<namespace>`` is ``local``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

LOCAL_NAMESPACE: Final = "local"
# Where a load generator finds a configmap://NAME/KEY dataset: the operator mounts ConfigMap NAME
# at DATASETS_DIR/NAME (a local run reads $FMBENCH_DATASETS_DIR/NAME/KEY instead). Not under the
# spec's read-only mount at /etc/fmbench: a mount point cannot be made inside that one.
DATASETS_DIR: Final = "/etc/fmbench-datasets"


def run_id(started: datetime, uid: str = "") -> str:
    """``YYYYmmdd-HHMMSS`` (UTC) and, on a cluster, the first 6 characters of the object's uid:
    derived from the object, so it is the same however often the operator restarts."""
    stamp = started.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uid[:6]}" if uid else stamp


def run_path(namespace: str, benchmark: str, run: str) -> str:
    """The run's folder under its prefix."""
    return f"{namespace}/{benchmark}/{run}"


def search_key(variant: str) -> str:
    """Run-relative key of a variant's search trace (levels tried, verdicts, c*)."""
    return f"stages/{variant}.search.json"


@dataclass(frozen=True)
class LoadgenTarget:
    """What the master and every worker of one variant are told alike."""

    spec: str  # path of the run's spec.yaml as the process sees it
    variant: str
    output: str  # the run's folder: a path or s3:// URI
    run_id: str
    endpoint_url: str | None = None  # None: the variant's own endpoint.url
    api: str | None = None
    verify: int | None = None  # the verification of this many instances (contract/verification.py)

    def args(self) -> list[str]:
        out = ["--spec", self.spec, "--variant", self.variant, "--output", self.output, "--run-id", self.run_id]
        if self.endpoint_url is not None:
            out += ["--endpoint-url", self.endpoint_url, "--api", self.api or "openai-chat"]
        if self.verify is not None:
            out += ["--verify", str(self.verify)]
        return out


def loadgen_master_args(
    target: LoadgenTarget,
    *,
    bind_host: str,
    master_port: int,
    expect_workers: int,
    outcome_file: str | None = None,
    ready_timeout: float | None = None,
) -> list[str]:
    """The load generator's ``master …`` arguments (its program: ``fmbench-k8s loadgen`` in a pod,
    ``python -m fmbench_k8s.loadgen`` locally)."""
    args = ["master", *target.args(), "--bind-host", bind_host, "--master-port", str(master_port)]
    args += ["--expect-workers", str(expect_workers)]
    if outcome_file is not None:
        args += ["--outcome-file", outcome_file]
    if ready_timeout is not None:
        args += ["--ready-timeout", f"{ready_timeout:g}"]
    return args


def loadgen_worker_args(
    target: LoadgenTarget, *, master_host: str, master_port: int, metrics_port: int, worker_id: str | None
) -> list[str]:
    """The load generator's ``worker …`` arguments; without ``worker_id`` the worker takes
    $FMBENCH_WORKER_ID (a pod's name, on a cluster)."""
    args = [
        "worker", *target.args(), "--master-host", master_host, "--master-port", str(master_port),
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    return args + (["--worker-id", worker_id] if worker_id is not None else [])


def judge_key_env(judge: str) -> str:
    """The environment variable the analysis reads judge ``judge``'s bearer token from (the
    operator sets it in the analysis Job from evaluation.judging.judges[].apiKeySecretRef)."""
    return "FMBENCH_JUDGE_KEY_" + judge.upper().replace("-", "_")


# The embedding endpoint's bearer token (evaluation.embedding.apiKeySecretRef), likewise.
EMBEDDING_KEY_ENV: Final = "FMBENCH_EMBEDDING_KEY"


def analyze_args(
    *,
    spec: str,
    records: str,
    run: str,
    output: str | None = None,
    summary_file: str | None = None,
    prometheus_url: str | None = None,
    ran_on: Mapping[str, Sequence[str]] | None = None,
    bought: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """``analyze …``: records → report. ``ran_on``, ``bought``: the instance types and capacity
    types of the nodes each variant's pods ran on."""
    args = ["analyze", "--spec", spec, "--records", records, "--run-id", run]
    if output is not None:
        args += ["--output-dir", output]
    if summary_file is not None:
        args += ["--summary-file", summary_file]
    if prometheus_url is not None:
        args += ["--prometheus-url", prometheus_url]
    for name, types in sorted((ran_on or {}).items()):
        if types:
            args += ["--ran-on", f"{name}={','.join(sorted(types))}"]
    for name, capacities in sorted((bought or {}).items()):
        if capacities:
            args += ["--capacity-type", f"{name}={','.join(sorted(capacities))}"]
    return args
