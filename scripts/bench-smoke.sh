#!/usr/bin/env bash
# Every benchmark scenario at a small size, so the bench code cannot rot:
# each must run to the end and print its JSON line. Figures are not checked
# (timing on a shared CI machine is noise); BENCHMARKS.md has the real runs.
# Uses the debug build that `cargo test --all-targets` leaves behind (it
# builds every binary), else builds it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BENCH="$REPO/target/debug/kengine-gateway-bench"
if [[ ! -x "$BENCH" || ! -x "$REPO/target/debug/kengine-gateway" ]]; then
  cargo build --bins
fi
export KENGINE_GATEWAY_TEST_CADDY="${KENGINE_GATEWAY_TEST_CADDY:-$("$REPO/scripts/ensure-kengine.sh")}"

run() {
  local name=$1
  shift
  echo "bench-smoke: $name: $*" >&2
  local out
  out="$("$BENCH" "$@")"
  # The last line is the scenario's machine-readable result.
  tail -n 1 <<<"$out" | python3 -c 'import json, sys; json.loads(sys.stdin.read())' \
    || { echo "bench-smoke: $name printed no JSON result" >&2; echo "$out" >&2; return 1; }
}

run translate translate --routes 100,500 --iterations 2
run propagation propagation --routes 20 --report-every 10
run attached attached --routes 50
run churn churn --changes 2 --filler 10
run dispatch dispatch --hosts 50 --seconds 0.3 --rounds 1 --connections 2
run dispatch-distinct dispatch --hosts 50 --seconds 0.3 --rounds 1 --connections 2 --distinct-backends
run dispatch-two-rules dispatch --hosts 50 --seconds 0.3 --rounds 1 --connections 2 --two-rules
run route-cost route-cost --hosts 50 --seconds 0.2 --rounds 1 --connections 2
run reload reload --routes 100,300 --endpoint-changes 10 --rounds 1
echo "bench-smoke: all scenarios ran" >&2
