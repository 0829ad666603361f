"""Container images for the real node, built without Docker or a registry.

* the **base**: a Debian bookworm root filesystem with Python 3.11 (``debootstrap --variant=minbase``
  from the machine's own Debian mirror), cached;
* the **project image**: the Dockerfile's runtime stage replayed on that base - its ENV, USER,
  WORKDIR and ENTRYPOINT read from the Dockerfile, the wheel built by the builder stage's command
  and installed into ``/opt/venv`` (dependencies from a wheelhouse built on this machine, so the
  root filesystem never needs the network);
* the **pause image**: the sandbox container, a static Go program (tests/cluster/go/pause).

Each is written as an OCI image layout tarball that ``ctr images import`` takes, and cached under
``${FMBENCH_IMAGE_CACHE:-~/.cache/fmbench-k8s/images}`` by a hash of what went into it.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
PAUSE_MODULE = Path(__file__).resolve().parent / "go" / "pause"
CACHE = Path(os.environ.get("FMBENCH_IMAGE_CACHE", Path.home() / ".cache" / "fmbench-k8s" / "images"))
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
PROJECT_REPO = "fmbench.local/fmbench-k8s"
PAUSE_REF = "fmbench.local/pause:3.10"
ARCH = "amd64"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    ref: str  # the name pods use, e.g. fmbench.local/fmbench-k8s:3f2a...
    archive: Path  # an OCI layout tarball for ``ctr images import``


def _log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], *, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".lock-{name}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


# -- the Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text() if text is None else text)
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_stages(text: str | None = None) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in dockerfile_instructions(text):
        if instr[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def _env_pairs(args: str) -> list[tuple[str, str]]:
    """``ENV A=1 B=$A:x`` as [(A, 1), (B, $A:x)] (the forms the Dockerfile uses)."""
    return [tuple(item.split("=", 1)) for item in args.split()]  # type: ignore[misc]


def runtime_config(base_path: str) -> dict[str, Any]:
    """The OCI image config the Dockerfile's runtime stage declares."""
    runtime = dockerfile_stages()[-1]
    env: dict[str, str] = {"PATH": base_path}
    config: dict[str, Any] = {}
    for kind, args in runtime:
        if kind == "ENV":
            for key, value in _env_pairs(args):
                env[key] = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), ""), value)
        elif kind == "USER":
            config["User"] = args
        elif kind == "WORKDIR":
            config["WorkingDir"] = args
        elif kind in ("ENTRYPOINT", "CMD"):
            config["Entrypoint" if kind == "ENTRYPOINT" else "Cmd"] = json.loads(args)
        elif kind == "EXPOSE":
            config["ExposedPorts"] = {f"{p}/tcp": {} for p in args.split()}
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    return config


def runtime_install_steps() -> list[str]:
    """The runtime stage's RUN that creates /opt/venv, split into its commands."""
    run = next(v for k, v in dockerfile_stages()[-1] if k == "RUN" and "/opt/venv" in v)
    return [part.strip() for part in run.split("&&")]


def runtime_user() -> tuple[int, int]:
    user = next(v for k, v in dockerfile_stages()[-1] if k == "USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


# -- the base root filesystem ----------------------------------------------------------------------


def debian_mirror() -> str:
    """The machine's own Debian mirror (the first ``main`` source of apt that serves Debian)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():  # one-line format: deb URI SUITE COMPONENTS
            words = line.split("#", 1)[0].split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE and "main" in words[3:]:
                return words[1]
        for stanza in text.split("\n\n"):  # deb822 format
            fields = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in stanza.splitlines()) if v)
            if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                return fields.get("URIs", "").split()[0]
    raise ImageError(f"no Debian {SUITE} 'main' source in /etc/apt/sources.list[.d]: cannot debootstrap the base")


def base_rootfs() -> Path:
    """Debian bookworm minbase + Python 3.11, built once (about 4 minutes) and cached."""
    key = _digest(SUITE.encode(), " ".join(BASE_PACKAGES).encode(), b"minbase-v1")
    out = CACHE / f"base-{SUITE}-{key}"
    with _locked(out.name):
        if (out / ".complete").is_file():
            return out / "rootfs"
        if shutil.which("debootstrap") is None:
            raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        started = time.monotonic()
        _log(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) into {out}; about 4 minutes, once")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(out / "rootfs"),
                debian_mirror(),
            ],
            timeout=3600,
        )
        root = out / "rootfs"
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        (out / ".complete").touch()
        _log(f"base ready in {time.monotonic() - started:.0f}s")
        return root


# -- OCI image layout ------------------------------------------------------------------------------


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # /dev, /proc and /sys are the runtime's; their contents never belong in a layer.
    parts = info.name.split("/")
    if len(parts) > 2 and parts[1] in ("dev", "proc", "sys"):
        return None
    info.mtime = 0
    return info


def _write_layer(rootfs: Path, dest: Path) -> tuple[str, str, int]:
    """A gzipped layer of ``rootfs``: (diff_id, digest, size)."""
    raw = dest.with_suffix(".tar")
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".", filter=_tar_filter)
    diff_id = "sha256:" + _file_sha(raw)
    with (
        open(raw, "rb") as src,
        open(dest, "wb") as out,
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)
    raw.unlink()
    return diff_id, "sha256:" + _file_sha(dest), dest.stat().st_size


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_oci_archive(rootfs: Path, config: dict[str, Any], ref: str, dest: Path) -> Path:
    """``rootfs`` as a one-layer OCI image named ``ref``, packed as a tarball at ``dest``."""
    work = dest.with_name(dest.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_tmp = work / "layer.tar.gz"
    diff_id, layer_digest, layer_size = _write_layer(rootfs, layer_tmp)
    layer_tmp.rename(blobs / layer_digest.split(":")[1])

    def blob(obj: dict[str, Any], media_type: str) -> dict[str, Any]:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    image_config = {
        "architecture": ARCH,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(image_config, "application/vnd.oci.image.config.v1+json"),
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    desc = blob(manifest, "application/vnd.oci.image.manifest.v1+json")
    tag = ref.rsplit(":", maxsplit=1)[-1]
    desc["annotations"] = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag}
    desc["platform"] = {"architecture": ARCH, "os": "linux"}
    (work / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(work / name, arcname=name)
    tmp.rename(dest)
    shutil.rmtree(work)
    return dest


# -- the project image -----------------------------------------------------------------------------


def _source_key() -> str:
    """A hash of what the wheel is built from (works in a copy of the checkout without .git)."""
    h = hashlib.sha256(DOCKERFILE.read_bytes())
    for top in ("fmbench_k8s", "operator", "loadgen", "analysis"):
        for folder, dirs, files in os.walk(REPO / top):  # symlinked folders are not followed
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                path = Path(folder) / name
                if not path.is_symlink() and path.suffix not in (".pyc", ".so"):
                    h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    h.update((REPO / "pyproject.toml").read_bytes() + (REPO / "setup.py").read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def _wheelhouse(dest: Path) -> None:
    """The builder stage's wheel plus every dependency as a wheel (pip's cache makes this quick)."""
    build = next(v for k, v in dockerfile_stages()[0] if k == "RUN" and "pip wheel" in v)
    if build != "pip wheel --no-deps -w /dist .":
        raise ImageError(f"the Dockerfile's builder stage changed ({build!r}); update tests/cluster/images.py")
    ctx = dest.parent / "context"
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(REPO, ctx, symlinks=True, ignore=shutil.ignore_patterns(*_dockerignore()))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ctx)])
    (wheel,) = dest.glob("fmbench_k8s-*.whl")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest), str(wheel)])
    shutil.rmtree(ctx)


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [p.strip().removeprefix("**/") for p in lines if p.strip() and not p.startswith("#")]


def project_image() -> Image:
    """The project's image from the Dockerfile's recipe on the cached base; about 2 minutes when
    the sources changed, instant otherwise."""
    key = _source_key()
    ref = f"{PROJECT_REPO}:{key}"
    out = CACHE / f"project-{key}"
    archive = out / "image.tar"
    with _locked("project"):
        if archive.is_file():
            return Image(ref, archive)
        base = base_rootfs()
        started = time.monotonic()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        wheels = out / "wheels"
        _wheelhouse(wheels)
        root = out / "rootfs"
        _run(["cp", "-a", str(base), str(root)])
        uid, gid = runtime_user()
        # The Dockerfile's groupadd/useradd, without the tools (minbase has no passwd package).
        with open(root / "etc" / "group", "a") as fh:
            fh.write(f"fmbench:x:{gid}:\n")
        with open(root / "etc" / "passwd", "a") as fh:
            fh.write(f"fmbench:x:{uid}:{gid}::/tmp:/usr/sbin/nologin\n")
        shutil.copytree(wheels, root / "dist")
        steps = runtime_install_steps()
        if steps[0] != "python -m venv /opt/venv" or not steps[-2].endswith("/dist/*.whl"):
            raise ImageError(f"the Dockerfile's install steps changed ({steps}); update tests/cluster/images.py")
        # The same steps, with the dependencies from the wheelhouse instead of the network.
        offline = "--no-index --find-links /dist"
        script = " && ".join(
            [
                "python3 -m venv /opt/venv",
                f"/opt/venv/bin/pip install -q {offline} --no-cache-dir /dist/fmbench_k8s-*.whl",
                "rm -rf /dist",
            ]
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        _run(["chroot", str(root), "/bin/sh", "-c", script], env=env)
        (root / "tmp").chmod(0o1777)
        config = runtime_config("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        write_oci_archive(root, config, ref, archive)
        shutil.rmtree(root)
        shutil.rmtree(wheels)
        _log(f"{ref} built in {time.monotonic() - started:.0f}s ({archive.stat().st_size >> 20} MiB)")
        return Image(ref, archive)


def pause_image() -> Image:
    """The pod sandbox image: tests/cluster/go/pause built static."""
    key = _digest(*(p.read_bytes() for p in sorted(PAUSE_MODULE.glob("*"))), Path(__file__).read_bytes())
    out = CACHE / f"pause-{key}"
    archive = out / "image.tar"
    with _locked("pause"):
        if archive.is_file():
            return Image(PAUSE_REF, archive)
        shutil.rmtree(out, ignore_errors=True)
        root = out / "rootfs"
        root.mkdir(parents=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        proc = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(root / "pause"), "."],
            cwd=PAUSE_MODULE,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ImageError(f"go build of the pause program failed:\n{proc.stderr[-2000:]}")
        write_oci_archive(root, {"Entrypoint": ["/pause"], "User": "65535:65535"}, PAUSE_REF, archive)
        shutil.rmtree(root)
        return Image(PAUSE_REF, archive)


def import_image(image: Image, containerd_address: str) -> None:
    """Import into containerd's k8s.io namespace (where the kubelet's CRI looks)."""
    _run(["ctr", "--address", containerd_address, "-n", "k8s.io", "images", "import", str(image.archive)], timeout=900)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.cluster.images`` builds (or finds) every image and prints the archives."""
    del argv
    for image in (pause_image(), project_image()):
        print(image.ref, image.archive)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
