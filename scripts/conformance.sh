#!/usr/bin/env bash
# Run the official Gateway API conformance suite (v1.6.1) against the
# controller as `helm install` sets it up, on a local real control plane
# (tests/official_conformance.rs), and write the ConformanceReport.
#
#   scripts/conformance.sh [--profiles GATEWAY-HTTP,...] [--run-test NAME] [--report FILE]
#
# Defaults: the GATEWAY-HTTP profile with the features our GatewayClass
# advertises, and the report at
# conformance/reports/v1.6.1/kengine-gateway/experimental-v<version>-default-report.yaml,
# from which CONFORMANCE.md is regenerated. With --run-test the report goes
# to a temporary file unless --report is given (one test is no report to
# publish), and CONFORMANCE.md is left alone.
#
# Needs root (network namespaces), the Go toolchain and the module proxy
# for the first build (scripts/ensure-kube.sh, scripts/ensure-conformance.sh),
# and Caddy 2.8.4 and helm (installed when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "conformance.sh: $*" >&2; exit 2; }

profiles="GATEWAY-HTTP"
run_test=""
report=""
while (($#)); do
  case "$1" in
    --profiles) [[ $# -ge 2 ]] || die "--profiles needs a value"; profiles="$2"; shift 2 ;;
    --run-test) [[ $# -ge 2 ]] || die "--run-test needs a value"; run_test="$2"; shift 2 ;;
    --report) [[ $# -ge 2 ]] || die "--report needs a value"; report="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$profiles" =~ ^[A-Z-]+(,[A-Z-]+)*$ ]] || die "--profiles: a comma-separated list such as GATEWAY-HTTP,GATEWAY-GRPC"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
publish=0
if [[ -z "$report" && -z "$run_test" ]]; then
  report="$REPO/conformance/reports/v1.6.1/kengine-gateway/experimental-v$version-default-report.yaml"
  publish=1
fi
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
if ((publish)); then
  export KENGINE_GATEWAY_CONFORMANCE_MARKDOWN="$REPO/CONFORMANCE.md"
fi

cargo test --locked --test official_conformance -- --nocapture
if [[ -n "$report" ]]; then
  echo "conformance.sh: report written to $report" >&2
fi
