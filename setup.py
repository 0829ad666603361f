"""The load generator's stream reader in C (loadgen/_streams.c); the rest of the build is in
pyproject.toml. Here because setuptools' pyproject table for extensions is still experimental.
Every install compiles it: a C compiler is needed (the Dockerfile's builder stage installs gcc)."""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("fmbench_k8s.loadgen._streams", ["loadgen/_streams.c"], extra_compile_args=["-O2", "-Wall"])]
)
