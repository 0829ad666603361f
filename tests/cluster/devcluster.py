"""What ``make cluster`` adds to the control plane so that a Benchmark really runs on it: the real
node (tests/cluster/node.py) with the project's image, an S3 server (moto) on the host end of the
node's link with the bucket the samples name, the namespace ``fmbench`` whose pods go to the real
node, and ``.cluster/values.yaml``: the chart values for this cluster. docs/install.md ("Try it on
a local cluster") uses exactly these.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.images import pause_image, project_image
from tests.cluster.node import GPU_NODE_SHAPE, NodeNetwork, RealNode, missing_host_tools, namespace_annotations

NODE_NAME = "fmbench-real-0"
NAMESPACE = "fmbench"
BUCKET = "fmbench-results"
S3_STATE = "s3.json"
# The node has this machine's cores for the operator and every pod of a run.
SMALL = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}


def can_run_a_real_node() -> str | None:
    """Why this machine cannot run the real node, or None."""
    if os.geteuid() != 0:
        return "the real node needs root (network namespace, containerd, kubelet)"
    missing = missing_host_tools()
    return f"missing {', '.join(missing)} (run tests/cluster/host.sh)" if missing else None


def identities() -> dict[str, tuple[str, str]]:
    return RealNode.identities(NODE_NAME)


def start(cp: ControlPlane, network: NodeNetwork, state_dir: Path, admin: Any) -> Path:
    """Start the node, S3 and the namespace; returns the chart values file."""
    from kubernetes import client

    node = RealNode(NODE_NAME, network, cp, state_dir / "node", shape=GPU_NODE_SHAPE, die_with_parent=False)
    node.start([project_image()], pause_image(), admin, timeout=300)
    endpoint = _start_s3(network.host_ip, state_dir)
    core: Any = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": NAMESPACE, "annotations": namespace_annotations(NODE_NAME)}})
    env = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
    }
    values = chart_values(node.images[0].ref, [{"name": k, "value": v} for k, v in env.items()])
    path = state_dir / "values.yaml"
    header = "# Chart values for the local cluster of `make cluster` (its image, its S3, a 2-core node).\n"
    path.write_text(header + yaml.safe_dump(values, sort_keys=False))
    return path


def chart_values(image: str, runner_env: list[dict[str, Any]]) -> dict[str, Any]:
    """Chart values for a cluster whose one real node runs everything: the locally imported image
    (no registry: pullPolicy Never), small requests, and the run pods' extra environment."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {"intervalSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"memory": "1Gi"}},
        "runner": {
            "resources": {k: SMALL for k in ("loadgenMaster", "loadgenWorker", "analysis", "simulator")},
            "extraEnv": runner_env,
        },
    }


def _start_s3(host: str, state_dir: Path) -> str:
    from fmbench_k8s.local.processes import free_port

    port = free_port()
    log = state_dir / "logs" / "s3.log"
    binary = Path(sys.executable).parent / "moto_server"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", host, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://{host}:{port}"
    (state_dir / S3_STATE).write_text(json.dumps({"pid": proc.pid, "binary": str(binary), "endpoint": endpoint}))
    deadline = time.monotonic() + 30
    while True:
        try:  # moto's REST API: create the bucket the samples name
            req = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
            with urllib.request.urlopen(req, timeout=2):
                return endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the local S3 server did not start; see {log}") from None
            time.sleep(0.2)


def stop(cp: ControlPlane, state_dir: Path) -> list[str]:
    """Stop the node and S3; returns what could not be stopped."""
    left = []
    if (state_dir / "node" / "node.json").is_file():
        node = RealNode.attach(state_dir / "node", cp)
        node.stop()
    try:
        s3 = json.loads((state_dir / S3_STATE).read_text())
    except (OSError, ValueError):
        s3 = None
    if s3 is not None:
        pid = int(s3["pid"])
        if _is_s3(pid):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _is_s3(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_s3(pid):
                left.append(f"s3 (pid {pid})")
        (state_dir / S3_STATE).unlink(missing_ok=True)
    return left


def _is_s3(pid: int) -> bool:
    """Is ``pid`` still our moto server (not a reused pid, not a zombie)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"moto_server" in cmdline and state != "Z"
