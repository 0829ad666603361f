"""A real Kubernetes node on this machine: containerd + runc + kubelet + kube-proxy + CoreDNS.

The node lives in a network namespace of its own, joined to the host by one veth pair::

    host (root namespace)                  node namespace fmbn-<i>
    fmbh<i>  10.250.<i>.1/30 ───── veth ── eth0 10.250.<i>.2/30   node IP: kubelet, kube-proxy, CoreDNS
    route 10.251.<i>.0/24 via .2           bridge fmb0 10.251.<i>.1/24 ── pods (bridge CNI)

kube-apiserver (and whatever pods must reach: S3, Prometheus) listens on the host end. The kubelet
and kube-proxy write iptables chains and need IP forwarding: inside the node's namespace they
change nothing on the host (whose default route, ip_forward and iptables stay as they are), pod
traffic stays on the bridge and the link, and deleting the namespace removes all of it.
:meth:`RealNode.stop` removes every process, mount, namespace and interface the node made;
:func:`leftovers` says what is left (a test checks it is nothing).

Prerequisites (installed by tests/cluster/host.sh): Debian's containerd, runc,
containernetworking-plugins, iptables; kubelet, kube-proxy and coredns from tests/cluster/build.sh.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import Component, ControlPlane, ControlPlaneError, _die_with_parent, _tail
from tests.cluster.images import Image, import_image

NODE_NS_PREFIX = "fmbn-"
HOST_IF_PREFIX = "fmbh"
BRIDGE = "fmb0"
CNI_BIN = Path("/usr/lib/cni")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "nsenter", "iptables", "mount")
CLUSTER_DOMAIN = "cluster.local"
COREDNS_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["services", "endpoints", "namespaces", "pods"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]
MNT_DETACH = 2
RUN_ROOT = Path("/run/fmbench")


class NodeError(ControlPlaneError):
    pass


def _run(cmd: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def missing_host_tools() -> list[str]:
    return [t for t in HOST_TOOLS if shutil.which(t) is None] + [
        p for p in ("bridge", "host-local", "loopback") if not (CNI_BIN / p).is_file()
    ]


# -- the network ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeNetwork:
    """The node's namespace and link; ``index`` picks addresses no host interface or route uses."""

    index: int

    @property
    def netns(self) -> str:
        return f"{NODE_NS_PREFIX}{self.index}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def host_if(self) -> str:
        return f"{HOST_IF_PREFIX}{self.index}"

    @property
    def host_ip(self) -> str:
        return f"10.250.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.250.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.251.{self.index}.0/24"

    @classmethod
    def create(cls) -> NodeNetwork:
        used = _host_networks()
        taken = set(_run(["ip", "netns", "list"]).stdout.split())
        for index in range(1, 250):
            net = cls(index)
            mine = [ipaddress.ip_network(f"10.250.{index}.0/30"), ipaddress.ip_network(net.pod_cidr)]
            if net.netns in taken or any(m.overlaps(u) for m in mine for u in used):
                continue
            net._setup()
            return net
        raise NodeError("no free 10.250.x.0/30 + 10.251.x.0/24 pair for a node network")

    def _setup(self) -> None:
        ns, hif = self.netns, self.host_if
        try:
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", hif])
            _run(["ip", "link", "set", hif, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.node_ip}/30", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # Host -> pods (the API server's proxy, Prometheus): a route on our own link only.
            _run(["ip", "route", "add", self.pod_cidr, "via", self.node_ip, "dev", hif])
            # Pods -> host services; the node forwards between its bridge and its link. These sysctls
            # belong to the node's namespace, not the host's.
            self.sysctl("net.ipv4.ip_forward", "1")
        except BaseException:
            self.delete()
            raise

    def sysctl(self, key: str, value: str) -> None:
        _run(["ip", "netns", "exec", self.netns, "sysctl", "-q", "-w", f"{key}={value}"])

    def delete(self) -> None:
        """Deleting the namespace deletes the bridge, the veth pair (and the host route on it) and
        every iptables chain the kubelet and kube-proxy made."""
        _run(["ip", "netns", "delete", self.netns], check=False)
        _run(["ip", "link", "delete", self.host_if], check=False)


def _host_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for addr in json.loads(_run(["ip", "-j", "-4", "addr"]).stdout or "[]"):
        for info in addr.get("addr_info", []):
            out.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_run(["ip", "-j", "-4", "route"]).stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            out.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return out


# -- the node ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeShape:
    """How the node presents itself: EKS-like labels, taints and extended resources."""

    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()  # key=value:Effect, as --register-with-taints takes them
    extended_resources: dict[str, str] = field(default_factory=dict)


# Only pods of namespaces that ask for the real node run there (:func:`namespace_annotations`); the
# kwok tests' pods, which a kwok node would never run, stay off it.
REAL_NODE_TAINT = "fmbench.io/real-node"
# The node presents itself as an EKS g6e.2xlarge GPU node (labels and one nvidia.com/gpu), so the
# operator's pods for a GPU variant schedule there unchanged; the run's CPU pods (load generators,
# analysis, the operator) share it as they share a node group.
GPU_NODE_SHAPE = NodeShape(
    labels={
        "node.kubernetes.io/instance-type": "g6e.2xlarge",
        "eks.amazonaws.com/nodegroup": "real-g6e-2xlarge",
        "eks.amazonaws.com/capacityType": "ON_DEMAND",
        "karpenter.sh/capacity-type": "on-demand",
        "topology.kubernetes.io/zone": "us-west-2a",
        "topology.kubernetes.io/region": "us-west-2",
        "nvidia.com/gpu.product": "NVIDIA-L40S",
        "fmbench.io/real-node": "true",
    },
    extended_resources={"nvidia.com/gpu": "1"},
    taints=(f"{REAL_NODE_TAINT}=true:NoSchedule",),
)


def namespace_annotations(node: str) -> dict[str, str]:
    """A namespace whose every pod runs on ``node``: the PodNodeSelector and
    PodTolerationRestriction admission plugins add the selector and the toleration."""
    toleration = {"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
    return {
        "scheduler.alpha.kubernetes.io/node-selector": f"kubernetes.io/hostname={node}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }


STATE_FILE = "node.json"
OWNER_FILE = "state-dir"  # in a node's run directory: the state directory of the node it serves


class RealNode:
    """One real node against ``control_plane`` (started with ``address=network.host_ip`` and the
    identities of :func:`identities`). ``die_with_parent`` as for the control plane: off for
    ``make cluster``, whose node outlives the command (:meth:`attach` finds it again)."""

    def __init__(
        self,
        name: str,
        network: NodeNetwork,
        control_plane: ControlPlane,
        state_dir: Path,
        *,
        shape: NodeShape | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.network = network
        self.cp = control_plane
        self.state_dir = Path(state_dir).resolve()
        self.shape = shape or NodeShape()
        self.die_with_parent = die_with_parent
        self.components: list[Component] = []
        self.images: list[Image] = []
        # Unix socket paths are limited to 104 bytes: containerd's sockets and the kubelet's root
        # (device plugin and pod-resources sockets) get a short home, whatever the state directory.
        self.run_dir = RUN_ROOT / network.netns
        self.containerd_sock = self.run_dir / "containerd.sock"

    @staticmethod
    def identities(name: str) -> dict[str, tuple[str, str]]:
        """Static-token users the control plane must know for a node called ``name``."""
        return {
            f"kubelet-{name}": (f"system:node:{name}", "system:nodes"),
            f"kube-proxy-{name}": ("system:kube-proxy", ""),
            f"coredns-{name}": ("fmbench:coredns", ""),
        }

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, images: Sequence[Image], pause: Image, admin: Any, timeout: float = 120) -> None:
        """Start containerd, import ``images``, start the kubelet, kube-proxy and CoreDNS, and wait
        until the node is Ready and shaped."""
        missing = missing_host_tools()
        if missing:
            raise NodeError(f"missing on this machine: {', '.join(missing)} (run tests/cluster/host.sh)")
        deadline = time.monotonic() + timeout
        for remains in sweep_abandoned_nodes():
            print(f"real node: removed what an earlier run left: {remains}", file=sys.stderr)
        for sub in ("logs", "containerd", "cni/net.d", "cni/ipam", "pod-logs", "plugins"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / OWNER_FILE).write_text(str(self.state_dir))
        try:
            if self.cp.address != self.network.host_ip:  # a second node: the API server is on another link
                _run(["ip", "-n", self.network.netns, "route", "add", self.cp.address, "via", self.network.host_ip])
            self._start_containerd(pause, deadline)
            for image in (pause, *images):
                import_image(image, str(self.containerd_sock))
            self.images = list(images)
            self._save()
            self._authorize_coredns(admin)
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns()
            self._wait_ready(admin, deadline + 60 * len(images))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: Sequence[str]) -> Component:
        """Run ``args`` in the node's network namespace (only that: mounts, PIDs and cgroups are the
        host's, as on a real node)."""
        log = self.log_dir / f"{name}.log"
        cmd = ["nsenter", f"--net={self.network.netns_path}", "--", *args]
        with log.open("ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        comp = Component(name=name, binary=args[0], pid=popen.pid, log=log, popen=popen, args=tuple(args))
        self.components.append(comp)
        self._save()
        return comp

    def _save(self) -> None:
        state = {
            "name": self.name,
            "index": self.network.index,
            "images": [[i.ref, str(i.archive)] for i in self.images],
            "components": [c.to_json() for c in self.components],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

    @classmethod
    def attach(cls, state_dir: Path, control_plane: ControlPlane) -> RealNode:
        """A handle on a node started earlier by another process (``make cluster``)."""
        state = json.loads((Path(state_dir) / STATE_FILE).read_text())
        node = cls(state["name"], NodeNetwork(int(state["index"])), control_plane, state_dir, die_with_parent=False)
        node.images = [Image(ref, Path(archive)) for ref, archive in state["images"]]
        node.components = _components(state)
        return node

    def _wait(self, what: str, ok: Any, deadline: float, comp: Component | None = None) -> None:
        while not ok():
            if comp is not None and not comp.alive():
                raise NodeError(f"{comp.name} exited during start-up; last log lines ({comp.log}):\n{_tail(comp.log)}")
            if time.monotonic() > deadline:
                tail = f"; last log lines ({comp.log}):\n{_tail(comp.log)}" if comp else ""
                raise NodeError(f"timed out waiting for {what}{tail}")
            time.sleep(0.2)

    def _start_containerd(self, pause: Image, deadline: float) -> None:
        sd = self.state_dir / "containerd"
        cni = self.state_dir / "cni"
        config = f"""version = 2
root = "{sd / "root"}"
state = "{sd / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{sd / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause.ref}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{sd / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni / "net.d"}"
"""
        (sd / "config.toml").write_text(config)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "fmbench",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
            ],
        }
        (cni / "net.d" / "10-fmbench.conflist").write_text(json.dumps(conflist, indent=2))
        comp = self._spawn("containerd", ["containerd", "--config", str(sd / "config.toml"), "--log-level", "warn"])

        def answers() -> bool:
            return self.ctr("version", check=False).returncode == 0

        self._wait("containerd", answers, deadline, comp)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", "--address", str(self.containerd_sock), "-n", "k8s.io", *args], check=check)

    def _authorize_coredns(self, admin: Any) -> None:
        from kubernetes import client

        rbac: Any = client.RbacAuthorizationV1Api(admin)
        name = "fmbench:coredns"
        role = {"metadata": {"name": name}, "rules": COREDNS_RULES}
        binding = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
        }
        for create, body in ((rbac.create_cluster_role, role), (rbac.create_cluster_role_binding, binding)):
            try:
                create(body)
            except client.ApiException as err:
                if err.status != 409:  # a second node of the session
                    raise

    def _start_kubelet(self) -> None:
        assert self.cp.pki is not None
        kd = self.run_dir / "kubelet"
        kd.mkdir(parents=True, exist_ok=True)
        resolv = self.state_dir / "resolv.conf"
        resolv.write_text(f"nameserver {self.network.node_ip}\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine kind has cgroup v1 (hybrid); v1.36 refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "volumePluginDir": str(self.state_dir / "plugins"),
            "staticPodPath": "",
            "readOnlyPort": 0,
            "address": self.network.node_ip,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "x509": {"clientCAFile": str(self.cp.pki.ca_cert)},
                "webhook": {"enabled": False},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [self.network.node_ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            # The kubelet's own iptables chains are not needed (kube-proxy makes what Services need).
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "oomScoreAdj": 0,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "5s",
        }
        (kd / "config.yaml").write_text(yaml.safe_dump(config))
        labels = ",".join(f"{k}={v}" for k, v in self.shape.labels.items())
        args = [
            str(self.cp.bin_dir / "kubelet"),
            f"--config={kd / 'config.yaml'}",
            f"--kubeconfig={self.cp.component_kubeconfig(f'kubelet-{self.name}')}",
            f"--root-dir={kd}",
            f"--cert-dir={kd / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.node_ip}",
            "--v=1",
        ]
        if labels:
            args.append(f"--node-labels={labels}")
        if self.shape.taints:
            args.append(f"--register-with-taints={','.join(self.shape.taints)}")
        self._spawn("kubelet", args)

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cp.component_kubeconfig(f"kube-proxy-{self.name}"))},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "bindAddress": self.network.node_ip,
            "clusterCIDR": self.network.pod_cidr,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # 0 leaves the kernel's conntrack settings as they are (nf_conntrack_max is global).
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.state_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.cp.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"])

    def _start_coredns(self) -> None:
        kubeconfig = self.cp.component_kubeconfig(f"coredns-{self.name}")
        # Only cluster names are answered: nothing else is resolved (pods reach nothing outside).
        corefile = f""".:53 {{
    bind {self.network.node_ip}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        path = self.state_dir / "Corefile"
        path.write_text(corefile)
        self._spawn("coredns", [str(self.cp.bin_dir / "coredns"), "-conf", str(path)])

    def _wait_ready(self, admin: Any, deadline: float) -> None:
        from kubernetes import client

        core: Any = client.CoreV1Api(admin)
        kubelet = next(c for c in self.components if c.name == "kubelet")

        def ready() -> bool:
            try:
                node = core.read_node(self.name)
            except client.ApiException:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or ())

        self._wait(f"node {self.name} to be Ready", ready, deadline, kubelet)
        if self.shape.extended_resources:
            # As a device plugin would (docs: "Advertise Extended Resources for a Node").
            patch = [
                {"op": "add", "path": f"/status/capacity/{k.replace('/', '~1')}", "value": v}
                for k, v in self.shape.extended_resources.items()
            ]
            core.patch_node_status(self.name, patch)

            def allocatable() -> bool:  # the kubelet's next status update derives it
                have = core.read_node(self.name).status.allocatable or {}
                return all(have.get(k) == v for k, v in self.shape.extended_resources.items())

            self._wait(f"{self.name} to advertise {self.shape.extended_resources}", allocatable, deadline, kubelet)
        for comp in self.components:
            if not comp.alive():
                raise NodeError(f"{comp.name} exited; last log lines ({comp.log}):\n{_tail(comp.log)}")

    def stop(self) -> None:
        """Stop everything and remove every process, mount, namespace and interface of the node."""
        by_name = {c.name: c for c in self.components}
        for name in ("coredns", "kube-proxy", "kubelet"):
            if name in by_name:
                _stop(by_name[name])
        if "containerd" in by_name and by_name["containerd"].alive():
            self._remove_containers()
        if "containerd" in by_name:
            _stop(by_name["containerd"])
        _remove_remains(self.state_dir, self.network)
        self.components = []

    def _remove_containers(self) -> None:
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(50):
                if self.ctr("tasks", "delete", task, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)


def _components(state: dict[str, Any]) -> list[Component]:
    return [
        Component(name=c["name"], binary=c["binary"], pid=int(c["pid"]), log=Path(c["log"]))
        for c in state["components"]
    ]


def _shim_pids(containerd_sock: Path) -> list[int]:
    """containerd-shim processes serving the containerd of ``containerd_sock`` (their command line
    names its socket); they outlive that containerd."""
    out = []
    needle = str(containerd_sock).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and needle in cmdline:
            out.append(int(proc.name))
    return out


def _remove_remains(state_dir: Path, network: NodeNetwork | None) -> None:
    """What a node's processes leave once they are gone: with its ``network``, its containers'
    shims, its run directory, namespace and interface; its mounts and its state file."""
    if network is not None:
        run_dir = RUN_ROOT / network.netns
        for pid in _shim_pids(run_dir / "containerd.sock"):  # started for this node's containers only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _unmount_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            RUN_ROOT.rmdir()  # only when no other node uses it
        network.delete()
    _unmount_under(state_dir)
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def sweep_abandoned_nodes() -> list[str]:
    """Remove what nodes of runs that ended without :meth:`RealNode.stop` (a killed test session,
    a restarted machine) left on this machine, and say what. A node is found by its state file
    (``node.json``) above one of the machine's mounts or named by a run directory's owner file; it
    is abandoned when none of the processes that file names still runs. Its network goes too
    only where its run directory says it is its own (an index may have been taken again since)."""
    found: set[Path] = set()
    for point in _mount_points():
        if "/containerd/" in point:  # under a state directory: containerd's state and root only
            found.update(parent for parent in Path(point).parents if (parent / STATE_FILE).is_file())
    for owner in RUN_ROOT.glob(f"{NODE_NS_PREFIX}*/{OWNER_FILE}"):
        found.add(Path(owner.read_text().strip()))
    removed = []
    for state_dir in sorted(found):
        try:
            state = json.loads((state_dir / STATE_FILE).read_text())
            network, components = NodeNetwork(int(state["index"])), _components(state)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a node's state file
        if any(c.alive() for c in components):
            continue
        owner = RUN_ROOT / network.netns / OWNER_FILE
        owned = owner.is_file() and Path(owner.read_text().strip()) == state_dir
        mounts = len(mounts_under(state_dir)) + (len(mounts_under(owner.parent)) if owned else 0)
        _remove_remains(state_dir, network if owned else None)
        also = f" and {network.netns}" if owned else ""
        removed.append(f"node {state['name']} in {state_dir}: {mounts} mount(s){also}")
    return removed


def _stop(comp: Component, timeout: float = 15) -> None:
    if comp.alive():
        comp.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while comp.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    comp.signal(signal.SIGKILL)
    if comp.popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            comp.popen.wait(timeout=5)


def _mount_points() -> list[str]:
    return [line.split()[4].replace("\\040", " ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    return [point for point in _mount_points() if point == prefix or point.startswith(prefix + "/")]


def _unmount_under(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):  # a mount may stack on another; repeat until none is left
        points = mounts_under(path)
        if not points:
            return
        for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
            libc.umount2(point.encode(), MNT_DETACH)


def leftovers(node: RealNode) -> list[str]:
    """What of ``node`` is still on this machine after :meth:`RealNode.stop` (should be nothing)."""
    out = [f"process {c.name} (pid {c.pid})" for c in node.components if c.alive()]
    out += [f"containerd-shim pid {pid}" for pid in _shim_pids(node.containerd_sock)]
    out += [f"mount {m}" for m in mounts_under(node.state_dir) + mounts_under(node.run_dir)]
    out += [f"directory {node.run_dir}"] if node.run_dir.exists() else []
    if node.network.netns in _run(["ip", "netns", "list"]).stdout.split():
        out.append(f"network namespace {node.network.netns}")
    links = json.loads(_run(["ip", "-j", "link"]).stdout or "[]")
    out += [f"interface {lk['ifname']}" for lk in links if lk["ifname"] in (node.network.host_if, BRIDGE)]
    routes = json.loads(_run(["ip", "-j", "-4", "route"]).stdout or "[]")
    out += [f"route {r['dst']}" for r in routes if r.get("dst") == node.network.pod_cidr]
    return out


def host_firewall() -> str:
    """The host's iptables rules (the node must leave them as it found them)."""
    return "".join(_run(["iptables", "-t", t, "-S"]).stdout for t in ("filter", "nat", "mangle", "raw"))
