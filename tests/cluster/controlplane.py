"""A real Kubernetes control plane on loopback, with kwok-simulated nodes.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(binaries from ``tests/cluster/build.sh``) as local processes:

* self-signed CA + serving certificate, service-account signing key and a
  static token file (``admin`` in ``system:masters``; one identity per
  component) are generated into the state directory;
* all ports are free loopback ports picked at start;
* every process runs in its own process group, logs to
  ``<state>/logs/<name>.log``, and :meth:`ControlPlane.stop` kills the groups;
* the admin kubeconfig is written to the path given (default
  ``<repo>/.cluster/kubeconfig``).

CLI (used by ``make cluster`` / ``make cluster-down``)::

    python tests/cluster/controlplane.py up      # build if needed, start detached, create EKS-shaped nodes
    python tests/cluster/controlplane.py status
    python tests/cluster/controlplane.py down
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime as _dt
import ipaddress
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fmbench_k8s.local.processes import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SCRIPT = HERE / "build.sh"
KWOK_CONFIG = HERE / "kwok.yaml"
DEFAULT_STATE_DIR = REPO / ".cluster"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STATE_FILE = "pids.json"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


# --------------------------------------------------------------------------- build


def build_binaries(build_script: Path = BUILD_SCRIPT, *, quiet: bool = False) -> Path:
    """Run build.sh (a no-op when the cache is warm) and return the bin dir."""
    if not build_script.is_file():
        raise ControlPlaneError(f"build script missing: {build_script}")
    proc = subprocess.run(
        ["bash", str(build_script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = f"\n{proc.stderr[-4000:]}" if quiet and proc.stderr else ""
        raise ControlPlaneError(
            f"building the test control plane failed ({build_script} exited {proc.returncode}){detail}"
        )
    lines = proc.stdout.strip().splitlines()
    bin_dir = Path(lines[-1]) if lines else Path()
    missing = [b for b in BINARIES if not (bin_dir / b).is_file()]
    if missing:
        raise ControlPlaneError(f"{build_script} printed bin dir {bin_dir!s} but it lacks {', '.join(missing)}")
    return bin_dir


# --------------------------------------------------------------------------- PKI


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    kubelet_client_cert: Path  # the API server's identity towards kubelets (logs, exec)
    kubelet_client_key: Path


def generate_pki(directory: Path, address: str = "127.0.0.1") -> Pki:
    """CA, a serving cert for 127.0.0.1/``address``/localhost/kubernetes.default..., SA keys, and
    the API server's client certificate for kubelets."""
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fmbench-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = ec.generate_private_key(ec.SECP256R1())
    first_service_ip = next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())  # 10.96.0.1
    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    ips = {ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address(address), first_service_ip}
    sans += [x509.IPAddress(ip) for ip in sorted(ips)]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_name = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
    ]
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(client_name))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    return Pki(
        ca_cert=_write(directory / "ca.crt", ca_cert.public_bytes(pem), 0o644),
        ca_key=_write(directory / "ca.key", _key_pem(ca_key)),
        serving_cert=_write(directory / "serving.crt", srv_cert.public_bytes(pem), 0o644),
        serving_key=_write(directory / "serving.key", _key_pem(srv_key)),
        sa_key=_write(directory / "sa.key", _key_pem(sa_key)),
        sa_pub=_write(
            directory / "sa.pub",
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        ),
        kubelet_client_cert=_write(directory / "kubelet-client.crt", client_cert.public_bytes(pem), 0o644),
        kubelet_client_key=_write(directory / "kubelet-client.key", _key_pem(client_key)),
    )


# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (a local run's ``free_port``: none from the ephemeral range,
    which an outgoing connection could take before the component binds it)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def kubeconfig_yaml(server: str, ca_pem: bytes, token: str, user: str, cluster: str = "fmbench-test") -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: SIGKILL the child when the process that started it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that init has not reaped yet counts as dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_runs(pid: int, binary: str) -> bool:
    """Is ``pid`` alive and still running ``binary`` (guards against pid reuse)?"""
    if not _pid_alive(pid):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True  # cannot tell; assume it is ours
    return Path(exe.removesuffix(" (deleted)")).name == Path(binary).name


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Component:
    name: str
    binary: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    args: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.binary)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # each component leads its own process group

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "binary": self.binary, "pid": self.pid, "log": str(self.log)}


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """Start/stop etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.

    ``state_dir`` holds certificates, tokens, etcd data, component kubeconfigs,
    ``logs/`` and ``pids.json``; it is wiped on :meth:`start`.
    ``die_with_parent`` makes the components exit if this Python process dies
    (for tests); the CLI's ``up`` turns it off so the cluster outlives it.

    ``address`` is where kube-apiserver listens and what it advertises: loopback for a kwok-only
    cluster, the host end of a real node's link (tests/cluster/node.py) when pods must reach it -
    then the ``kubernetes`` Service gets that address as its endpoint. ``identities`` adds static
    token users (name -> (user, comma-separated groups)), e.g. a kubelet's ``system:node:<name>``;
    each gets a kubeconfig at :meth:`component_kubeconfig`.
    """

    def __init__(
        self,
        bin_dir: Path,
        state_dir: Path = DEFAULT_STATE_DIR,
        kubeconfig: Path | None = None,
        *,
        die_with_parent: bool = True,
        address: str = "127.0.0.1",
        identities: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self.address = address
        self.identities = dict(identities or {})
        self.state_dir = Path(state_dir).resolve()
        self.kubeconfig = Path(kubeconfig).resolve() if kubeconfig else self.state_dir / "kubeconfig"
        self.die_with_parent = die_with_parent
        self.components: list[Component] = []
        self.ports: dict[str, int] = {}
        self.admin_token = ""
        self.pki: Pki | None = None
        self.startup_seconds = 0.0

    # -- properties ---------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports['apiserver']}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def component_kubeconfig(self, name: str) -> Path:
        """The kubeconfig of a component or of one of the ``identities``."""
        return self.state_dir / "components" / f"{name}.kubeconfig"

    # -- lifecycle ----------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        """Start everything and wait until the cluster can run pods."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        missing = [b for b in BINARIES if not (self.bin_dir / b).is_file()]
        if missing:
            raise ControlPlaneError(f"missing binaries in {self.bin_dir}: {', '.join(missing)}; run {BUILD_SCRIPT}")
        self._prepare_state_dir()
        try:
            self._start_all(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _prepare_state_dir(self) -> None:
        if self.state_dir.exists():
            old = self._read_state()
            if old and any(c.alive() for c in old):
                raise ControlPlaneError(
                    f"a control plane from {self.state_dir} is still running; stop it first "
                    f"(python {Path(__file__).name} down --state-dir {self.state_dir})"
                )
            for sub in ("etcd", "pki", "logs", "components"):
                _rmtree(self.state_dir / sub)
            for f in (STATE_FILE,):
                (self.state_dir / f).unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _start_all(self, deadline: float) -> None:
        sd = self.state_dir
        pki = self.pki = generate_pki(sd / "pki", self.address)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        p = self.ports

        self.admin_token = secrets.token_hex(24)
        tokens = {
            "admin": (self.admin_token, "admin", "system:masters"),
            "controller-manager": (secrets.token_hex(24), "system:kube-controller-manager", ""),
            "scheduler": (secrets.token_hex(24), "system:kube-scheduler", ""),
            "kwok": (secrets.token_hex(24), "kwok-controller", "system:masters"),
            **{name: (secrets.token_hex(24), user, groups) for name, (user, groups) in self.identities.items()},
        }
        _write(
            sd / "pki" / "tokens.csv",
            "".join(f'{tok},{user},{user},"{groups}"\n' for tok, user, groups in tokens.values()),
        )
        ca_pem = pki.ca_cert.read_bytes()
        kcfg = {
            name: _write(self.component_kubeconfig(name), kubeconfig_yaml(self.server, ca_pem, tok, user))
            for name, (tok, user, _) in tokens.items()
        }
        _write(self.kubeconfig, kubeconfig_yaml(self.server, ca_pem, self.admin_token, "admin"))

        # etcd
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                "--name=fmbench",
                f"--data-dir={sd / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=fmbench={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        self._wait_http("etcd", f"{etcd_url}/health", deadline, lambda body: '"health":"true"' in body)

        # kube-apiserver
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={sd / 'pki' / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # 127.0.0.1 is not a valid Endpoints address: without a real node nothing in the
                # cluster dials the API server; with one, pods reach it through the Service.
                f"--endpoint-reconciler-type={'none' if self.address == '127.0.0.1' else 'lease'}",
                f"--kubelet-client-certificate={pki.kubelet_client_cert}",
                f"--kubelet-client-key={pki.kubelet_client_key}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",  # node names are not in DNS
                "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_http(
            "kube-apiserver",
            f"{self.server}/readyz",
            deadline,
            lambda body: body.strip() == "ok",
            token=self.admin_token,
        )

        # controllers, scheduler, kwok
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kcfg['controller-manager']}",
                f"--authentication-kubeconfig={kcfg['controller-manager']}",
                f"--authorization-kubeconfig={kcfg['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['controller-manager']}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--use-service-account-credentials=true",
                "--controllers=*",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--cluster-name=fmbench-test",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kcfg['scheduler']}",
                f"--authentication-kubeconfig={kcfg['scheduler']}",
                f"--authorization-kubeconfig={kcfg['scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['scheduler']}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kcfg['kwok']}",
                f"--config={KWOK_CONFIG}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{p['kwok']}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.240.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )
        self._write_state()
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._wait_http(
            "kube-controller-manager",
            f"https://127.0.0.1:{p['controller-manager']}/healthz",
            deadline,
            lambda b: b.strip() == "ok",
            context=ctx,
        )
        self._wait_http(
            "kube-scheduler",
            f"https://127.0.0.1:{p['scheduler']}/healthz",
            deadline,
            lambda b: b.strip() == "ok",
            context=ctx,
        )
        self._wait_http("kwok", f"http://127.0.0.1:{p['kwok']}/healthz", deadline, lambda b: b.strip() == "ok")
        # Pods need the namespace's default ServiceAccount (serviceaccount controller).
        self._wait_http(
            "kube-controller-manager",
            f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
            deadline,
            lambda b: '"name":"default"' in b.replace(" ", ""),
            token=self.admin_token,
            what="the default ServiceAccount",
        )

    def _spawn(self, name: str, args: Sequence[str]) -> Component:
        binary = str(self.bin_dir / name)
        log = self.log_dir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env["NO_PROXY"] = env["no_proxy"] = f"127.0.0.1,localhost,{self.address}"
        with log.open("ab") as out:
            out.write(f"$ {binary} {' '.join(args)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        comp = Component(name=name, binary=binary, pid=popen.pid, log=log, popen=popen, args=tuple(args))
        self.components.append(comp)
        return comp

    def _wait_http(
        self,
        name: str,
        url: str,
        deadline: float,
        ok: Callable[[str], bool],
        *,
        token: str | None = None,
        context: ssl.SSLContext | None = None,
        what: str | None = None,
    ) -> None:
        if context is None and url.startswith("https") and self.pki is not None:
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        comp = next((c for c in self.components if c.name == name), None)
        last = ""
        while True:
            if comp is not None and not comp.alive():
                raise ControlPlaneError(
                    f"{name} exited during start-up; last log lines ({comp.log}):\n{_tail(comp.log)}"
                )
            req = urllib.request.Request(url)
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=2, context=context) as resp:
                    body = resp.read().decode(errors="replace")
                if ok(body):
                    return
                last = body[:300]
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                log = f"; last log lines ({comp.log}):\n{_tail(comp.log)}" if comp else ""
                raise ControlPlaneError(f"timed out waiting for {what or name} ({url}): {last}{log}")
            time.sleep(0.1)

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        """Kill kube-apiserver (SIGKILL) and start it again with the same flags, as when its node
        or pod dies; returns once it is ready again. Clients must reconnect on their own."""
        old = next(c for c in self.components if c.name == "kube-apiserver")
        old.signal(signal.SIGKILL)
        if old.popen is not None:
            old.popen.wait(timeout)
        self.components.remove(old)
        self._spawn("kube-apiserver", old.args)
        self._wait_http(
            "kube-apiserver",
            f"{self.server}/readyz",
            time.monotonic() + timeout,
            lambda body: body.strip() == "ok",
            token=self.admin_token,
        )
        self._write_state()

    def stop(self, timeout: float = 10.0) -> None:
        """Kill every component's process group; idempotent.

        Components stop one by one in reverse start order (kwok ... etcd), each
        with SIGTERM and, after ``timeout`` seconds, SIGKILL: stopping etcd
        before kube-apiserver would leave the apiserver's shutdown hanging.
        """
        comps = list(reversed(self.components)) or list(reversed(self._read_state() or []))
        for c in comps:
            if c.alive():
                c.signal(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while c.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if c.alive():
                c.signal(signal.SIGKILL)
                deadline = time.monotonic() + 5
                while c.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if c.popen is not None:
                # Our own child: its pid (= process group id) cannot be reused
                # before we reap it, so sweeping the whole group is safe.
                c.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.popen.wait(timeout=5)
        self.components = []
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def running(self) -> list[Component]:
        return [c for c in self.components if c.alive()]

    # -- state file ----------------------------------------------------------
    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": self.ports,
            "bin_dir": str(self.bin_dir),
            "components": [c.to_json() for c in self.components],
        }
        _write(self.state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n", 0o644)

    def _read_state(self) -> list[Component] | None:
        path = self.state_dir / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        self.ports = {str(k): int(v) for k, v in state.get("ports", {}).items()}
        return [
            Component(name=c["name"], binary=c["binary"], pid=int(c["pid"]), log=Path(c["log"]))
            for c in state.get("components", [])
        ]

    @classmethod
    def attach(cls, state_dir: Path = DEFAULT_STATE_DIR) -> ControlPlane:
        """A handle on a control plane started earlier (by another process)."""
        state_dir = Path(state_dir).resolve()
        try:
            state = json.loads((state_dir / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ControlPlaneError(f"no control plane state in {state_dir}: {exc}") from exc
        cp = cls(Path(state.get("bin_dir", ".")), state_dir, Path(state["kubeconfig"]), die_with_parent=False)
        cp.components = cp._read_state() or []
        return cp

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


@contextlib.contextmanager
def running_control_plane(
    state_dir: Path, kubeconfig: Path | None = None, *, bin_dir: Path | None = None
) -> Iterator[ControlPlane]:
    """Build (if needed), start, yield, stop."""
    cp = ControlPlane(bin_dir or build_binaries(), state_dir, kubeconfig)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


# --------------------------------------------------------------------------- CLI


def _cmd_up(args: argparse.Namespace) -> int:
    from tests.cluster import devcluster
    from tests.cluster.clusterkit import Cluster, create_nodes, load_node_groups
    from tests.cluster.node import NodeNetwork

    state_dir = Path(args.state_dir)
    if (state_dir / STATE_FILE).exists():
        old = ControlPlane.attach(state_dir)
        if any(c.alive() for c in old.components):
            print(f"control plane already running (state in {state_dir})", file=sys.stderr)
            print(f"export KUBECONFIG={old.kubeconfig}")
            return 0
    t0 = time.monotonic()
    bin_dir = build_binaries()
    t_build = time.monotonic() - t0
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    real = not args.no_real_node
    if real and (why := devcluster.can_run_a_real_node()):
        raise ControlPlaneError(f"{why}; or start without it: --no-real-node")
    network = NodeNetwork.create() if real else None
    cp = ControlPlane(
        bin_dir,
        state_dir,
        kubeconfig,
        die_with_parent=False,
        address=network.host_ip if network else "127.0.0.1",
        identities=devcluster.identities() if network else None,
    )
    print(f"starting control plane (logs: {cp.log_dir}) ...", file=sys.stderr)
    nodes: list[str] = []
    cluster = None
    try:
        cp.start()
        cluster = Cluster(cp.kubeconfig)
        if not args.no_nodes:
            nodes = create_nodes(cluster.admin, load_node_groups(args.nodes))
        if network is not None:
            print("starting the real node, its image and a local S3 (minutes the first time) ...", file=sys.stderr)
            values = devcluster.start(cp, network, state_dir, cluster.admin)
    except BaseException:
        devcluster.stop(cp, state_dir)
        cp.stop()
        if network is not None:
            network.delete()
        raise
    finally:
        if cluster is not None:
            cluster.close()
    total = time.monotonic() - t0
    print(
        f"control plane up at {cp.server}: {len(nodes)} kwok nodes{', 1 real node' if network else ''}; "
        f"build check {t_build:.1f}s, start {cp.startup_seconds:.1f}s, total {total:.1f}s",
        file=sys.stderr,
    )
    if network is not None:
        print(f"chart values for this cluster: {values}", file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from tests.cluster import devcluster

    state_dir = Path(args.state_dir)
    if not (state_dir / STATE_FILE).exists():
        print(f"no control plane running (no {state_dir / STATE_FILE})", file=sys.stderr)
        return 0
    cp = ControlPlane.attach(state_dir)
    components = list(cp.components)
    left = devcluster.stop(cp, state_dir)
    cp.stop()
    left += [c.name for c in components if c.alive()]
    print("control plane stopped" if not left else f"still running: {left}", file=sys.stderr)
    return 0 if not left else 1


def _cmd_status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    try:
        cp = ControlPlane.attach(state_dir)
    except ControlPlaneError:
        print("down")
        return 3
    up = True
    for c in cp.components:
        alive = c.alive()
        up &= alive
        print(f"{c.name:<24} pid {c.pid:<8} {'running' if alive else 'DEAD'}  log {c.log}")
    print(f"kubeconfig: {cp.kubeconfig}")
    if up:
        print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0 if up else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help="state/log directory (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build if needed, start detached, create nodes")
    up.add_argument("--kubeconfig", help="where to write the admin kubeconfig (default: <state-dir>/kubeconfig)")
    up.add_argument("--nodes", default=str(HERE / "nodes.yaml"), help="node groups YAML (default: %(default)s)")
    up.add_argument("--no-nodes", action="store_true", help="do not create kwok nodes")
    up.add_argument("--no-real-node", action="store_true", help="no real node (needs no root; nothing runs)")
    sub.add_parser("down", help="stop a control plane started with 'up'")
    sub.add_parser("status", help="show the components of a control plane started with 'up'")
    args = parser.parse_args(argv)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command]
    try:
        return handler(args)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if str(REPO) not in sys.path:  # run as a script: make `tests.cluster` importable
        sys.path.insert(0, str(REPO))
    sys.exit(main())
