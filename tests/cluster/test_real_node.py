"""The real node itself: pods run in containerd/runc from the project's image, get addresses on the
node's bridge, resolve Service names through CoreDNS, reach Services through kube-proxy and the
host end of the node's link; the node shows up like an EKS GPU node; a node taken down leaves
nothing behind on this machine, and what a killed run's node left is swept."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.fixtures import REAL_NODE, SPARE_NODE, TestCluster
from tests.cluster.images import pause_image, project_image
from tests.cluster.node import (
    OWNER_FILE,
    REAL_NODE_TAINT,
    RUN_ROOT,
    STATE_FILE,
    NodeNetwork,
    RealNode,
    host_firewall,
    leftovers,
    mounts_under,
    sweep_abandoned_nodes,
)
from tests.s3 import CREDENTIALS, moto_s3

pytestmark = pytest.mark.cluster


def _pod(name: str, image: str, args: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
            "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,  # python's http.server ignores SIGTERM
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c"],
                    "args": args,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }


def _finished(cluster: TestCluster, namespace: str, name: str) -> tuple[str, str]:
    """Wait for a pod to end: (phase, its log)."""
    core: Any = cluster.core()

    def done() -> str | None:
        phase: str = core.read_namespaced_pod(name, namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = cluster.wait_for(done, timeout=180, description=f"pod {name} to finish")
    return phase, core.read_namespaced_pod_log(name, namespace)


SERVE = "import http.server as h; h.HTTPServer(('', 8080), h.SimpleHTTPRequestHandler).serve_forever()"
PROBE = """
import socket, sys, urllib.request
addr = socket.gethostbyname(sys.argv[1])
body = urllib.request.urlopen(f"http://{sys.argv[1]}:80/", timeout=10).read()
s3 = urllib.request.urlopen(sys.argv[2], timeout=10).status
print(addr, len(body) > 0, s3)
"""


def test_pods_resolve_services_reach_them_and_the_host(
    cluster: TestCluster, real_node: RealNode, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    image = real_node.images[0].ref
    core: Any = cluster.core()
    core.create_namespaced_pod(namespace, _pod("web", image, [SERVE]))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    core.create_namespaced_service(namespace, service)
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip

    def serving() -> bool:
        pod = core.read_namespaced_pod("web", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())

    cluster.wait_for(serving, timeout=120, description="the web pod to be Ready")
    pod_ip = core.read_namespaced_pod("web", namespace).status.pod_ip
    assert pod_ip.startswith(real_node.network.pod_cidr.rsplit(".", 2)[0])
    with moto_s3("probe", host=real_node.network.host_ip) as s3:
        probe = _pod("probe", image, [PROBE, f"web.{namespace}.svc", f"{s3.endpoint}/probe"])
        core.create_namespaced_pod(namespace, probe)
        phase, log = _finished(cluster, namespace, "probe")
    assert phase == "Succeeded", log
    assert log.split() == [cluster_ip, "True", "200"], log
    # kubectl logs works: the API server reached the kubelet with its client certificate.
    assert "GET / HTTP" in core.read_namespaced_pod_log("web", namespace)


def test_the_real_node_looks_like_an_eks_gpu_node(cluster: TestCluster, real_node: RealNode) -> None:
    node = cluster.core().read_node(REAL_NODE)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "g6e.2xlarge"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert [t.key for t in node.spec.taints or ()] == [REAL_NODE_TAINT]  # kwok tests' pods stay off it
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == real_node.network.node_ip
    assert node.status.node_info.container_runtime_version.startswith("containerd://")


def test_a_node_taken_down_leaves_nothing_on_the_machine(
    cluster: TestCluster, real_node: RealNode, tmp_path: Path
) -> None:
    """A second node in a second network namespace runs a pod, is stopped, and leaves no process,
    mount, namespace, interface or route, and the host's firewall and forwarding as they were."""
    assert cluster.control_plane is not None
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    firewall = host_firewall()
    core: Any = cluster.core()
    ns = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    node = RealNode(SPARE_NODE, NodeNetwork.create(), cluster.control_plane, tmp_path / "node")
    try:
        node.start([project_image()], pause_image(), cluster.admin, timeout=180)
        # The container waits for a signal (no timer): it runs until the node stops it.
        pod = _pod("sleeper", real_node.images[0].ref, ["import signal; signal.pause()"])
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": SPARE_NODE}
        core.create_namespaced_pod(ns, pod)

        def running() -> bool:
            return bool(core.read_namespaced_pod("sleeper", ns).status.phase == "Running")

        cluster.wait_for(running, timeout=120, description="the pod on the second node to run")
        assert node.ctr("tasks", "ls", "-q").stdout.split(), "no container runs on the second node"
    finally:
        node.stop()
        core.delete_namespace(ns)
    assert leftovers(node) == []
    assert host_firewall() == firewall
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    core.delete_node(SPARE_NODE)


def test_what_a_killed_run_left_is_swept_and_a_live_node_is_not_touched(real_node: RealNode, tmp_path: Path) -> None:
    """A run killed without its teardown (the machine restarted, pytest got SIGKILL) leaves its
    node's mounts, run directory and network namespace; the next node's start sweeps them. Here
    such remains are laid out by hand: a state file naming a containerd that no longer runs, a
    mount under its containerd state, a run directory that names it, with a mount, and its network."""
    live_mounts = mounts_under(real_node.state_dir) + mounts_under(real_node.run_dir)
    assert live_mounts, "the session's node has mounts of its own"
    gone = subprocess.Popen(["true"])
    gone.wait()
    state_dir = tmp_path / "node"
    network = NodeNetwork.create()
    run_dir = RUN_ROOT / network.netns
    mounts = [state_dir / "containerd" / "state" / "sandbox" / "shm", run_dir / "kubelet"]
    for point in mounts:
        point.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    (run_dir / OWNER_FILE).write_text(str(state_dir))
    state = {"name": "killed", "index": network.index, "images": [],
             "components": [{"name": "containerd", "binary": "containerd", "pid": gone.pid, "log": "x"}]}  # fmt: skip
    (state_dir / STATE_FILE).write_text(json.dumps(state))
    try:
        removed = sweep_abandoned_nodes()
        assert removed == [f"node killed in {state_dir}: 2 mount(s) and {network.netns}"]
        assert mounts_under(state_dir) == mounts_under(run_dir) == [] and not run_dir.exists()
        assert not Path(network.netns_path).exists()
        assert not (state_dir / STATE_FILE).exists()
        assert mounts_under(real_node.state_dir) + mounts_under(real_node.run_dir) == live_mounts
        assert sweep_abandoned_nodes() == []  # nothing twice
    finally:
        for point in mounts:
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        network.delete()
