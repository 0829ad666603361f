# Sourced by the engine scripts: the engines' cache folder, the Python that makes their venvs, and
# uv (pinned, in a venv of its own there), which installs them from its cache after the first time.
cache="${FMBENCH_CACHE:-$HOME/.cache/fmbench-k8s}/engines"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
mkdir -p "$cache"

uv() { # uv ARGS...: the pinned uv, installed on first use
  local tools="$cache/uv-tool"
  [ -x "$tools/bin/uv" ] || { "$python" -m venv "$tools" && "$tools/bin/pip" install -q uv==0.13.9; }
  "$tools/bin/uv" "$@"
}
