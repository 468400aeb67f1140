#!/usr/bin/env bash
# Build the real Kubernetes control plane the end-to-end tests run, from the
# Go modules pinned in e2e/kube/go.mod and go.sum (never a downloaded
# binary): etcd, kube-apiserver, kube-controller-manager and kube-proxy
# (the node agent of crates/test-support/src/node runs it), into
# <repo>/.kube-bin (git-ignored).
#
# A build is reused while e2e/kube's sources are unchanged (their hash is
# stored beside the binaries). The only line on stdout is the folder's
# path; progress goes to stderr, so callers can write
# KUBE_BIN="$(scripts/ensure-kube.sh)".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/e2e/kube"
OUT="$REPO/.kube-bin"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-proxy)

log() { echo "ensure-kube: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "the Go toolchain is not on PATH (the pinned components are built from Go modules)"

hash="$(cd "$SRC" && cat go.mod go.sum etcd/*.go tools.go "$REPO/scripts/ensure-kube.sh" | sha256sum | cut -c1-16)"
if [[ -f "$OUT/.source-hash" && "$(cat "$OUT/.source-hash")" == "$hash" ]]; then
  ok=1
  for c in "${COMPONENTS[@]}"; do [[ -x "$OUT/$c" ]] || ok=0; done
  if ((ok)); then
    echo "$OUT"
    exit 0
  fi
fi

mkdir -p "$OUT"
rm -f "$OUT/.source-hash"
start=$SECONDS
cd "$SRC"
# -mod=readonly: go.sum must already pin everything; a build never edits it.
export GOFLAGS="-mod=readonly ${GOFLAGS:-}"
log "building etcd"
go build -o "$OUT/etcd" ./etcd
# The version Kubernetes' own build stamps in (hack/lib/version.sh): without
# it the API server reports v0.0.0-master, and clients that check the
# server's version (helm's kubeVersion, the conformance suite) refuse it.
version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)"
[[ "$version" =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "no k8s.io/kubernetes version in e2e/kube/go.mod"
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=${BASH_REMATCH[1]}"
  ldflags+=" -X $pkg.gitMinor=${BASH_REMATCH[2]} -X $pkg.gitTreeState=clean"
done
for c in kube-apiserver kube-controller-manager kube-proxy; do
  log "building $c $version"
  go build -ldflags "$ldflags" -o "$OUT/$c" "k8s.io/kubernetes/cmd/$c"
done
echo "$hash" > "$OUT/.source-hash"
log "built ${COMPONENTS[*]} in $((SECONDS - start)) s"
echo "$OUT"
