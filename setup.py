"""The C parts: the load generator's stream reader (loadgen/_streams.c), the radix passes of the
percentiles (fmbench_k8s/contract/_radix.c) and the distinct count of request ids
(analysis/_distinct.c); the rest of the build is in pyproject.toml. Here because setuptools'
pyproject table for extensions is still experimental. Every install compiles them: a C compiler
is needed (the Dockerfile's builder stage installs gcc)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("fmbench_k8s.loadgen._streams", ["loadgen/_streams.c"], extra_compile_args=["-O2", "-Wall"]),
        Extension("fmbench_k8s.analysis._distinct", ["analysis/_distinct.c"], extra_compile_args=["-O2", "-Wall"]),
        Extension(
            "fmbench_k8s.contract._radix", ["fmbench_k8s/contract/_radix.c"], extra_compile_args=["-O2", "-Wall"]
        ),
    ]
)
