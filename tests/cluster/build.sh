#!/usr/bin/env bash
# Build the pinned binaries of the test cluster:
#   control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
#   real node:     kubelet, kube-proxy, coredns
#   clients:       kubectl, helm (docs/install.md's commands, run as written by a test)
# from the Go module proxy (modules in tests/cluster/go/{kube,kwok,coredns,helm}).
#
# Binaries go to a cache OUTSIDE the checkout, keyed by the pinned versions:
#   ${FMBENCH_CLUSTER_CACHE:-$HOME/.cache/fmbench-k8s/cluster}/<key>/bin/
# A second run with the same pins is a no-op.
#
# Usage: tests/cluster/build.sh [--print-bin-dir]
#   Progress goes to stderr; the bin directory is printed on stdout at the end.
#   --print-bin-dir prints the bin directory (built or not) and exits.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_MOD="$HERE/go/kube"
KWOK_MOD="$HERE/go/kwok"
DNS_MOD="$HERE/go/coredns"
HELM_MOD="$HERE/go/helm"
MIN_GO_MINOR=26   # go.mod of k8s.io/kubernetes v1.36 and kwok v0.8 need go >= 1.26

log() { printf '[cluster-build] %s\n' "$*" >&2; }
die() { printf '[cluster-build] ERROR: %s\n' "$*" >&2; exit 1; }

# Pinned versions, read from the go.mod files so there is one source of truth.
modver() { # modver <go.mod> <module path>
    awk -v m="$2" '$1 == "require" { $1 = ""; $0 = $0 }
                   $1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}
K8S_VERSION="$(modver "$KUBE_MOD/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(modver "$KUBE_MOD/go.mod" go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(modver "$KWOK_MOD/go.mod" sigs.k8s.io/kwok)"
DNS_VERSION="$(modver "$DNS_MOD/go.mod" github.com/coredns/coredns)"
HELM_VERSION="$(modver "$HELM_MOD/go.mod" helm.sh/helm/v3)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" && -n "$KWOK_VERSION" && -n "$DNS_VERSION" && -n "$HELM_VERSION" ]] ||
    die "could not read pinned versions from the go.mod files under $HERE/go"

hash_inputs() {
    cat "$KUBE_MOD/go.mod" "$KUBE_MOD/go.sum" "$KUBE_MOD/tools.go" \
        "$KWOK_MOD/go.mod" "$KWOK_MOD/go.sum" "$KWOK_MOD/tools.go" \
        "$DNS_MOD/go.mod" "$DNS_MOD/go.sum" "$DNS_MOD/tools.go" \
        "$HELM_MOD/go.mod" "$HELM_MOD/go.sum" "$HELM_MOD/tools.go" 2>/dev/null
    # The build recipe below is part of the key too.
    sed -n '/^# --- build recipe ---$/,$p' "${BASH_SOURCE[0]}"
}
INPUT_HASH="$(hash_inputs | sha256sum | cut -c1-12)"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_coredns-${DNS_VERSION}_helm-${HELM_VERSION}_${INPUT_HASH}"
CACHE_ROOT="${FMBENCH_CLUSTER_CACHE:-$HOME/.cache/fmbench-k8s/cluster}"
OUT="$CACHE_ROOT/$KEY"
BIN="$OUT/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubelet kube-proxy coredns kubectl helm)

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "$BIN"
    exit 0
fi

is_complete() {
    [[ -f "$OUT/.complete" ]] || return 1
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if is_complete; then
    log "up to date: $BIN"
    echo "$BIN"
    exit 0
fi

# --- build recipe ---
command -v go >/dev/null 2>&1 ||
    die "Go is not installed (need go >= 1.$MIN_GO_MINOR on PATH) - cannot build the test control plane"
GO_VERSION="$(go env GOVERSION)"          # e.g. go1.26.8
go_minor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$GO_VERSION")"
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge "$MIN_GO_MINOR" ]] ||
    die "found $GO_VERSION, need go >= 1.$MIN_GO_MINOR to build Kubernetes $K8S_VERSION"

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock-$KEY"
if ! flock -n 9; then
    log "another build of $KEY is running; waiting for it"
    flock 9
fi
if is_complete; then
    log "up to date (built concurrently): $BIN"
    echo "$BIN"
    exit 0
fi

export GOFLAGS="-mod=mod ${GOFLAGS:-}"
export CGO_ENABLED=0
STAGE="$OUT/.stage.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE"
trap 'rm -rf "$STAGE"' EXIT

# Version stamping as hack/lib/version.sh does it, so /version reports the release.
k8s_minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean"
done

log "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, CoreDNS $DNS_VERSION, Helm $HELM_VERSION with $GO_VERSION"
log "output: $BIN"
start_all=$SECONDS

build() { # build <module dir> <output> <ldflags> <package...>
    local dir="$1" out="$2" ldflags="$3"
    shift 3
    local t=$SECONDS
    log "building $(basename "$out") ..."
    (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$out" "$@") ||
        die "go build of $* failed (module $dir); see the output above"
    log "  done in $((SECONDS - t))s"
}

build "$KWOK_MOD" "$STAGE/kwok" "-s -w" sigs.k8s.io/kwok/cmd/kwok
build "$KUBE_MOD" "$STAGE/etcd" "-s -w" go.etcd.io/etcd/server/v3
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    build "$KUBE_MOD" "$STAGE/$b" "$K8S_LDFLAGS" "k8s.io/kubernetes/cmd/$b"
done
build "$DNS_MOD" "$STAGE/coredns" "-s -w" github.com/coredns/coredns
build "$HELM_MOD" "$STAGE/helm" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    helm.sh/helm/v3/cmd/helm

rm -rf "$BIN"
mv "$STAGE" "$BIN"
trap - EXIT
cat >"$OUT/versions.txt" <<EOF
kubernetes $K8S_VERSION
etcd $ETCD_VERSION
kwok $KWOK_VERSION
coredns $DNS_VERSION
helm $HELM_VERSION
go $GO_VERSION
EOF
touch "$OUT/.complete"
log "all binaries built in $((SECONDS - start_all))s"
echo "$BIN"
