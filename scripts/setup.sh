#!/usr/bin/env bash
# Installs what the README's commands need on a fresh Debian/Ubuntu machine: a virtualenv with the
# package and its dev tools, and Debian's prometheus (used by local runs and the tests). Idempotent:
# a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian package prometheus (server + promtool)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package starts a system service; we only want the binaries.
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || $SUDO pkill -x prometheus >/dev/null 2>&1 || true
  else
    echo "setup: prometheus is not installed and apt-get is unavailable: install Prometheus so that 'prometheus' and 'promtool' are on PATH" >&2
    exit 1
  fi
fi

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $VENV and installing fmbench-k8s with dev tools"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
