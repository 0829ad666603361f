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

# The load generator's stream reader and two passes of the analysis are C (setup.py lists them):
# pip compiles them, which needs a compiler and Python's headers.
has_headers() { "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; }
if ! command -v cc >/dev/null 2>&1 || ! has_headers; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages gcc, libc6-dev and python3-dev (to compile the C parts setup.py lists)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev >/dev/null
  fi
  if ! command -v cc >/dev/null 2>&1 || ! has_headers; then
    echo "setup: a C compiler (cc) and the headers of $PYTHON (Python.h) are needed to build the C parts setup.py lists: install them (Debian: gcc python3-dev)" >&2
    exit 1
  fi
fi

# Rebuilt when the package's build inputs change (an editable install does not recompile C by itself).
C_SOURCES=$(grep -o '"[A-Za-z0-9_/]*\.c"' setup.py | tr -d '"')  # setup.py's C_PARTS
stamp="$VENV/.installed-$(cat pyproject.toml setup.py $C_SOURCES | sha256sum | cut -c1-16)"
built() { for c in $C_SOURCES; do compgen -G "${c%.c}.*.so" >/dev/null || return 1; done; }
if [ ! -f "$stamp" ] || ! built; then
  echo "setup: creating $VENV and installing fmbench-k8s with dev tools"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
