#!/usr/bin/env bash
# Run the whole local test suite:
#   1. cargo test (unit, golden and data-plane integration tests; the
#      integration tests load configs into a real Kengine/Caddy 2.8.4 binary,
#      passed to them as KENGINE_GATEWAY_TEST_CADDY, and start a real
#      control plane built by scripts/ensure-kube.sh, passed to them as
#      KENGINE_GATEWAY_KUBE_BIN; the official conformance suite built by
#      scripts/ensure-conformance.sh runs as KENGINE_GATEWAY_CONFORMANCE_BIN);
#   2. ./scripts/quickstart.sh --check (the quickstart, end to end);
#   3. ./scripts/chart-test.sh (helm lint/template, manifest and CRD schema checks);
#   4. ./scripts/bench-smoke.sh (every benchmark scenario at a small size).
# All run even if one fails; the exit status is nonzero if any failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

BIN="$("$REPO/scripts/ensure-kengine.sh")"
cd "$REPO"
export KENGINE_BIN="$BIN"
export KENGINE_GATEWAY_TEST_CADDY="$BIN"
echo "==> data plane for tests: $BIN" >&2
# The real control plane (etcd, kube-apiserver, kube-controller-manager),
# built from e2e/kube's pinned Go modules; reused while they are unchanged.
KUBE_BIN="$("$REPO/scripts/ensure-kube.sh")"
export KENGINE_GATEWAY_KUBE_BIN="$KUBE_BIN"
echo "==> control plane for tests: $KUBE_BIN" >&2
# The official Gateway API conformance suites (v1.6.1, v1.7.0) and their
# backends (echo-basic, CoreDNS), built from the Go modules pinned in
# e2e/conformance-suite and e2e/conformance-suite-v1.7;
# tests/official_conformance.rs runs the GATEWAY-HTTP profile of each.
CONFORMANCE_BIN="$("$REPO/scripts/ensure-conformance.sh")"
export KENGINE_GATEWAY_CONFORMANCE_BIN="$CONFORMANCE_BIN"
echo "==> conformance suite for tests: $CONFORMANCE_BIN" >&2
# Real helm: the chart journey (tests/chart_e2e.rs) runs `helm install`.
HELM="$("$REPO/scripts/ensure-helm.sh")"
export HELM
echo "==> helm for tests: $HELM" >&2

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)

failed=()

echo "==> cargo test --all-targets --no-fail-fast ${LOCKED[*]:-}" >&2
cargo test --all-targets --no-fail-fast ${LOCKED[@]+"${LOCKED[@]}"} -- --test-threads=2 || failed+=("cargo test")

echo "==> ./scripts/quickstart.sh --check" >&2
./scripts/quickstart.sh --check || failed+=("quickstart --check")

echo "==> ./scripts/chart-test.sh" >&2
./scripts/chart-test.sh || failed+=("chart-test")

echo "==> ./scripts/bench-smoke.sh" >&2
./scripts/bench-smoke.sh || failed+=("bench-smoke")

if ((${#failed[@]})); then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all passed" >&2
