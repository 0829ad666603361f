#!/usr/bin/env bash
# Debian packages the tests need beyond Python's: for the real node of the test cluster
# (tests/cluster/node.py) containerd, runc, the CNI plugins, iptables (kube-proxy), debootstrap (the
# image base, tests/cluster/images.py); and chromium, the real browser the HTML report is judged in
# (tests/integration/test_report_in_browser.py). Idempotent: a second run only checks. Needs root.
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins iptables debootstrap chromium)
BINARIES=(containerd runc /usr/lib/cni/bridge iptables debootstrap chromium)

missing=()
for i in "${!BINARIES[@]}"; do
  command -v "${BINARIES[$i]}" >/dev/null 2>&1 || [ -x "${BINARIES[$i]}" ] || missing+=("${PACKAGES[$i]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "host.sh: the real node needs root and these Debian packages: ${missing[*]}" >&2
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || { echo "host.sh: apt-get not found; install: ${missing[*]}" >&2; exit 1; }
echo "host.sh: installing Debian packages ${missing[*]}"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package may start a system containerd; the node runs its own (own sockets and state).
systemctl disable --now containerd >/dev/null 2>&1 || true
