#!/usr/bin/env bash
# Build the official Gateway API conformance suite and its backends from the
# Go modules pinned in e2e/conformance-suite/go.mod and go.sum (never a
# downloaded binary or image), into <repo>/.conformance-bin (git-ignored):
#
#   conformance.test  go test -c of sigs.k8s.io/gateway-api/conformance
#                     (TestConformance; the manifests are embedded in it)
#   echo-basic        sigs.k8s.io/gateway-api/conformance/echo-basic, the
#                     backend behind the gateway-api/echo-basic:* images
#                     (HTTP, h2c, TLS; gRPC, TCP and UDP modes by env vars)
#   coredns           e2e/conformance-suite/coredns: CoreDNS v1.12.2 with the
#                     plugins the suite's Corefile names, behind
#                     the coredns/coredns:v1.12.2 image
#   v1.7.0/conformance.test
#                     the v1.7.0 suite, from e2e/conformance-suite-v1.7
#                     (Go 1.27: GOTOOLCHAIN=go1.27.3, fetched by the go
#                     command from the module proxy); its backends are the
#                     echo-basic above
#   v1.7.0/crd/       the v1.7.0 experimental CRDs, from the pinned
#                     sigs.k8s.io/gateway-api module (the suite needs its
#                     own bundle's CRDs)
#
# A build is reused while e2e/conformance-suite's sources are unchanged
# (their hash is stored beside the binaries). The only line on stdout is the
# folder's path; progress goes to stderr, so callers can write
# CONFORMANCE_BIN="$(scripts/ensure-conformance.sh)".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/e2e/conformance-suite"
SRC17="$REPO/e2e/conformance-suite-v1.7"
OUT="$REPO/.conformance-bin"
OUTPUTS=(conformance.test echo-basic coredns v1.7.0/conformance.test)

log() { echo "ensure-conformance: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "the Go toolchain is not on PATH (the suite is built from Go modules)"

hash="$(cat "$SRC"/go.mod "$SRC"/go.sum "$SRC"/*.go "$SRC"/coredns/*.go "$SRC17"/go.mod "$SRC17"/go.sum "$SRC17"/*.go | sha256sum | cut -c1-16)"
if [[ -f "$OUT/.source-hash" && "$(cat "$OUT/.source-hash")" == "$hash" ]]; then
  ok=1
  for c in "${OUTPUTS[@]}"; do [[ -x "$OUT/$c" ]] || ok=0; done
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
# -trimpath: the binaries do not depend on where the module cache is.
export GOFLAGS="-mod=readonly -trimpath ${GOFLAGS:-}"
log "building conformance.test"
# -vet=off: go test -c would otherwise vet the upstream package (and compute
# vet facts for all of its dependencies), which checks nothing of ours.
go test -c -vet=off -o "$OUT/conformance.test" sigs.k8s.io/gateway-api/conformance
log "building echo-basic"
go build -o "$OUT/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic
log "building coredns"
go build -o "$OUT/coredns" ./coredns
log "building v1.7.0/conformance.test (GOTOOLCHAIN=go1.27.3)"
cd "$SRC17"
export GOTOOLCHAIN=go1.27.3
mkdir -p "$OUT/v1.7.0"
go test -c -vet=off -o "$OUT/v1.7.0/conformance.test" sigs.k8s.io/gateway-api/conformance
rm -rf "$OUT/v1.7.0/crd"
cp -r "$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/experimental" "$OUT/v1.7.0/crd"
chmod -R u+w "$OUT/v1.7.0/crd"
echo "$hash" > "$OUT/.source-hash"
log "built ${OUTPUTS[*]} in $((SECONDS - start)) s"
echo "$OUT"
