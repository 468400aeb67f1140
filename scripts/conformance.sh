#!/usr/bin/env bash
# Run the official Gateway API conformance suites (v1.6.1 and v1.7.0)
# against the controller as `helm install` sets it up, on a local real
# control plane (tests/official_conformance.rs), and write the
# ConformanceReports.
#
#   scripts/conformance.sh [--version v1.6.1|v1.7.0] [--profiles GATEWAY-HTTP,...]
#                          [--run-test NAME] [--report FILE]
#
# Defaults: both versions, one after the other, the GATEWAY-HTTP and
# GATEWAY-GRPC profiles with the features our GatewayClass advertises,
# and each report at
# conformance/reports/<version>/kengine-gateway/experimental-v<ours>-default-report.yaml,
# from which that version's section of CONFORMANCE.md is regenerated. With
# --run-test or --report nothing is published (one test is no report to
# publish): the report goes to --report or to a temporary file, and
# --report needs --version.
#
# Needs root (network namespaces), the Go toolchain and the module proxy
# for the first build (scripts/ensure-kube.sh, scripts/ensure-conformance.sh),
# and Caddy 2.8.4 and helm (installed when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "conformance.sh: $*" >&2; exit 2; }

profiles="GATEWAY-HTTP,GATEWAY-GRPC"
run_test=""
report=""
version=""
while (($#)); do
  case "$1" in
    --version) [[ $# -ge 2 ]] || die "--version needs a value"; version="$2"; shift 2 ;;
    --profiles) [[ $# -ge 2 ]] || die "--profiles needs a value"; profiles="$2"; shift 2 ;;
    --run-test) [[ $# -ge 2 ]] || die "--run-test needs a value"; run_test="$2"; shift 2 ;;
    --report) [[ $# -ge 2 ]] || die "--report needs a value"; report="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$profiles" =~ ^[A-Z-]+(,[A-Z-]+)*$ ]] || die "--profiles: a comma-separated list such as GATEWAY-HTTP,GATEWAY-GRPC"
[[ -z "$version" || "$version" == v1.6.1 || "$version" == v1.7.0 ]] || die "--version: v1.6.1 or v1.7.0"
[[ -z "$report" || -n "$version" ]] || die "--report needs --version"

publish=0
[[ -z "$report" && -z "$run_test" ]] && publish=1
if [[ -n "$report" ]]; then
  mkdir -p "$(dirname "$report")"
  report="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
fi

export KENGINE_BIN="$("$REPO/scripts/ensure-kengine.sh")"
export KENGINE_GATEWAY_TEST_CADDY="$KENGINE_BIN"
export KENGINE_GATEWAY_KUBE_BIN="$("$REPO/scripts/ensure-kube.sh")"
export KENGINE_GATEWAY_CONFORMANCE_BIN="$("$REPO/scripts/ensure-conformance.sh")"
export HELM="$("$REPO/scripts/ensure-helm.sh")"
export KENGINE_GATEWAY_CONFORMANCE_PROFILES="$profiles"
[[ -n "$run_test" ]] && export KENGINE_GATEWAY_CONFORMANCE_RUN_TEST="$run_test"
[[ -n "$report" ]] && export KENGINE_GATEWAY_CONFORMANCE_REPORT="$report"
[[ -n "$version" ]] && export KENGINE_GATEWAY_CONFORMANCE_VERSION="$version"
((publish)) && export KENGINE_GATEWAY_CONFORMANCE_PUBLISH=1

cargo test --locked --test official_conformance -- --nocapture
if [[ -n "$report" ]]; then
  echo "conformance.sh: report written to $report" >&2
fi
