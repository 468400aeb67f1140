#!/usr/bin/env bash
# Tests of the Helm chart, the install manifest and the example manifests,
# all offline:
#   - helm lint --strict, with the default values and every fixture in
#     tests/chart/values/;
#   - helm template with the same values; the output is validated with
#     kubernetes-validate --strict (built-in kinds, Kubernetes 1.30 and 1.37)
#     and against the CRDs (custom resources: the KengineInstance CRD in crds/,
#     the Gateway API v1.6.1 and v1.1.0 standard-channel CRDs);
#   - every fixture in tests/chart/invalid/ must be rejected, with the message
#     its first line (`# expect: ...`) names;
#   - the chart's CRD is the file in crds/ (which `kengine-gateway crd`
#     generates), and deploy/install.yaml is the chart rendered with default
#     values;
#   - every manifest in deploy/examples/ against the same schemas;
#   - the RBAC the chart renders grants exactly the API calls the controller
#     makes (src/controller/rbac.rs) in every configuration: the tests
#     rbac_* of tests/chart.rs, run here with this helm (needs cargo).
#
# Installs what it needs when missing: helm into .tools/helm (with
# scripts/get-helm.sh, a copy of the shared get-helm tool), kubernetes-validate and
# jsonschema into .venv.
#
#   ./scripts/chart-test.sh            run the tests
#   ./scripts/chart-test.sh --update   rewrite deploy/install.yaml from the chart
#
# When a kengine-gateway binary is at hand (KENGINE_GATEWAY_BIN, default
# target/debug/kengine-gateway, which `cargo test` builds), it also checks that
# the controller accepts the arguments every rendering gives it.
#
# Environment: HELM (a helm binary to use instead), GATEWAY_API_DIR (default
# e2e/gateway-api: the Gateway API CRDs of v1.6.1/ and v1.1.0/ kept in this
# repository), KENGINE_GATEWAY_BIN, SKIP_CARGO=1 (skip the RBAC check, which
# builds tests/chart.rs).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

CHART=charts/kengine-gateway
NAMESPACE=kengine-system
K8S_VERSIONS=(1.30 1.37)
GATEWAY_API_VERSIONS=(v1.6.1 v1.1.0)
GATEWAY_API_DIR="${GATEWAY_API_DIR:-$REPO/e2e/gateway-api}"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"

log() { echo "chart-test: $*" >&2; }

# --- tools ------------------------------------------------------------------------
PY="$REPO/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
  log "creating .venv"
  python3 -m venv "$REPO/.venv"
fi
if ! "$PY" -c 'import jsonschema, kubernetes_validate, yaml' 2>/dev/null; then
  log "installing $KUBERNETES_VALIDATE and jsonschema into .venv"
  "$PY" -m pip install -q "$KUBERNETES_VALIDATE" jsonschema >&2
fi
HELM="$("$REPO/scripts/ensure-helm.sh")"

# deploy/install.yaml: the header, the namespace, then the chart with default
# values (CRDs included).
render_install() {
  cat <<'EOF'
# kengine-gateway: the Helm chart charts/kengine-gateway rendered with its
# default values, for installing without Helm. Generated; do not edit:
#
#   ./scripts/chart-test.sh --update
#
# runs `helm template kengine-gateway charts/kengine-gateway --namespace
# kengine-system --include-crds` and prepends the Namespace below;
# ./scripts/chart-test.sh fails when this file differs from that output.
#
# Install the Gateway API CRDs first (v1.1.0 to v1.6.1, standard or
# experimental channel); this file does not include them. Then:
#
#   kubectl apply --server-side -f deploy/install.yaml
#
# The images must be pullable: the controller image (khulnasoft/kengine-gateway,
# from the Containerfile), which managed Kengine pods also run as their
# admin-proxy sidecar, and the Kengine image of managed fleets
# (khulnasoft/kengine, from Containerfile.kengine). Build and push them, and
# edit the controller's image and its --admin-proxy-image and --kengine-image
# arguments below, or use the chart and set image.repository and
# managedFleets.kengineImage.repository.
---
apiVersion: v1
kind: Namespace
metadata:
  name: kengine-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
EOF
  "$HELM" template kengine-gateway "$CHART" --namespace "$NAMESPACE" --include-crds
}

if [[ "${1:-}" == "--update" ]]; then
  render_install >deploy/install.yaml.tmp
  mv deploy/install.yaml.tmp deploy/install.yaml
  log "wrote deploy/install.yaml"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
failures=()
# check NAME COMMAND...: runs COMMAND, its output shown only when it fails.
check() {
  local name="$1"
  shift
  if "$@" >"$TMP/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name"
    sed 's/^/     /' "$TMP/out"
  fi
}

K8S_ARGS=()
for v in "${K8S_VERSIONS[@]}"; do K8S_ARGS+=(--k8s-version "$v"); done

# validate FILE...: against both Gateway API releases.
validate() {
  local rc=0 v
  for v in "${GATEWAY_API_VERSIONS[@]}"; do
    local crds="$GATEWAY_API_DIR/$v/config/crd/standard"
    if [[ ! -d "$crds" ]]; then
      echo "missing $crds (set GATEWAY_API_DIR)"
      return 1
    fi
    "$PY" tests/chart/validate.py --label "gateway-api $v: " \
      --crds crds --crds tests/chart/servicemonitor-crd.yaml --crds "$crds" \
      "${K8S_ARGS[@]}" "$@" || rc=1
  done
  return $rc
}

# env_versions V CMD...: CMD with GATEWAY_API_VERSIONS=(V).
env_versions() {
  local saved=("${GATEWAY_API_VERSIONS[@]}") rc=0
  GATEWAY_API_VERSIONS=("$1")
  shift
  "$@" || rc=1
  GATEWAY_API_VERSIONS=("${saved[@]}")
  return $rc
}

# render_and_validate OUT [helm template args...]
render_and_validate() {
  local out="$1"
  shift
  "$HELM" template kengine-gateway "$CHART" --namespace "$NAMESPACE" --include-crds "$@" >"$out" &&
    validate "$out"
}

# expect_failure FIXTURE: helm template must fail with the `# expect:` message.
expect_failure() {
  local fixture="$1" expect
  expect="$(sed -n '1s/^# expect: //p' "$fixture")"
  if [[ -z "$expect" ]]; then
    echo "$fixture: first line must be '# expect: <part of the error message>'"
    return 1
  fi
  if "$HELM" template kengine-gateway "$CHART" --namespace "$NAMESPACE" -f "$fixture" >"$TMP/invalid.out" 2>&1; then
    echo "rendered, but should have failed with: $expect"
    return 1
  fi
  if ! grep -qF -- "$expect" "$TMP/invalid.out"; then
    echo "failed, but without \"$expect\":"
    cat "$TMP/invalid.out"
    return 1
  fi
}

# The NOTES render (helm install --dry-run=client needs no cluster).
notes() {
  "$HELM" install kengine-gateway "$CHART" --namespace "$NAMESPACE" --dry-run=client "$@" >"$TMP/notes.out" &&
    grep -q "kengine-gateway .* is installed in namespace" "$TMP/notes.out"
}

install_up_to_date() {
  render_install >"$TMP/install.yaml"
  diff -u deploy/install.yaml "$TMP/install.yaml" ||
    { echo "deploy/install.yaml is stale: run ./scripts/chart-test.sh --update"; return 1; }
}

# controller_accepts [helm template args...]: the controller container's
# arguments parse (clap stops at --help after checking those before it).
controller_accepts() {
  local args=()
  "$HELM" template kengine-gateway "$CHART" --namespace "$NAMESPACE" "$@" >"$TMP/args.yaml"
  mapfile -t args < <(sed -n '/^          args:$/,/^          env:$/s/^            - "\(.*\)"$/\1/p' "$TMP/args.yaml")
  [[ "${args[0]:-}" == controller ]] || { echo "no controller arguments found"; return 1; }
  env -u KENGINE_GATEWAY_LOG -u KENGINE_GATEWAY_LOG_FORMAT "$BIN" "${args[@]}" --help >/dev/null
}

kube_version_gate() {
  if "$HELM" template kengine-gateway "$CHART" --kube-version 1.29.0 >"$TMP/kv.out" 2>&1; then
    echo "rendered for Kubernetes 1.29, below the chart's kubeVersion"
    return 1
  fi
  grep -q "kubeVersion" "$TMP/kv.out" || { cat "$TMP/kv.out"; return 1; }
}

echo "chart-test: $("$HELM" version --short), $("$PY" -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: /kubernetes-validate /p')"

check "chart CRD is crds/kengineinstances.yaml" cmp crds/kengineinstances.yaml "$CHART/crds/kengineinstances.yaml"
check "helm lint --strict (defaults)" "$HELM" lint --strict "$CHART"
check "helm template (defaults) validates" render_and_validate "$TMP/default.yaml"
check "NOTES.txt renders (defaults)" notes
for f in tests/chart/values/*.yaml; do
  name="$(basename "$f" .yaml)"
  check "helm lint --strict ($name)" "$HELM" lint --strict "$CHART" -f "$f"
  check "helm template ($name) validates" render_and_validate "$TMP/$name.yaml" -f "$f"
  check "NOTES.txt renders ($name)" notes -f "$f"
done
for f in tests/chart/invalid/*.yaml; do
  check "rejects $(basename "$f" .yaml)" expect_failure "$f"
done
BIN="${KENGINE_GATEWAY_BIN:-$REPO/target/debug/kengine-gateway}"
if [[ -x "$BIN" ]]; then
  check "controller accepts the arguments (defaults)" controller_accepts
  for f in tests/chart/values/*.yaml; do
    check "controller accepts the arguments ($(basename "$f" .yaml))" controller_accepts -f "$f"
  done
else
  echo "skip controller arguments: no $BIN (set KENGINE_GATEWAY_BIN, or build it)"
fi
# The RBAC coverage test renders the chart with helm; run it with ours, and
# make a missing helm an error there rather than a skip.
rbac_coverage() {
  local locked=()
  [[ -f Cargo.lock ]] && locked=(--locked)
  HELM="$HELM" KENGINE_GATEWAY_REQUIRE_HELM=1 cargo test -q ${locked[@]+"${locked[@]}"} --test chart rbac_
}
if [[ "${SKIP_CARGO:-}" != 1 ]] && command -v cargo >/dev/null; then
  check "RBAC grants exactly the controller's API calls (cargo test --test chart rbac_)" rbac_coverage
else
  echo "skip RBAC coverage: no cargo (or SKIP_CARGO=1)"
fi
check "kubeVersion >= 1.30 enforced" kube_version_gate
check "deploy/install.yaml matches the chart" install_up_to_date
check "deploy/install.yaml validates" validate deploy/install.yaml
# BackendTLSPolicy v1 is in the standard channel from v1.4: that example is
# checked against the newest CRDs only.
v1_1_examples=()
for f in deploy/examples/*.yaml; do
  [[ "$f" == */backend-tls.yaml ]] || v1_1_examples+=("$f")
done
check "deploy/examples validate" validate "${v1_1_examples[@]}"
check "deploy/examples/backend-tls.yaml validates (v1.6.1)" \
  env_versions v1.6.1 validate deploy/examples/backend-tls.yaml

if ((failed)); then
  echo "chart-test: failed: ${failures[*]}" >&2
fi
echo "chart: $passed passed, $failed failed"
((failed == 0))
