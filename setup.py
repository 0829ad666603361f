"""The C parts: the load generator's stream reader, the radix passes of the percentiles and the
distinct count of request ids; the rest of the build is in pyproject.toml. Here because setuptools'
pyproject table for extensions is still experimental. Every install compiles them: a C compiler
is needed (the Dockerfile's builder stage installs gcc)."""

from setuptools import Extension, setup

# module → source (scripts/setup.sh reads the sources from here to know when to rebuild)
C_PARTS = {
    "fmbench_k8s.loadgen._streams": "loadgen/_streams.c",
    "fmbench_k8s.analysis._distinct": "analysis/_distinct.c",
    "fmbench_k8s.contract._radix": "fmbench_k8s/contract/_radix.c",
}

setup(ext_modules=[Extension(name, [source], extra_compile_args=["-O2", "-Wall"]) for name, source in C_PARTS.items()])
