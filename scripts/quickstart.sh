#!/usr/bin/env bash
# Quickstart: serve deploy/examples/quickstart.yaml through a local Kengine,
# without a Kubernetes cluster.
#
#   ./scripts/quickstart.sh          start everything, print what to try, wait for Ctrl-C
#   ./scripts/quickstart.sh --check  start everything, check the routing, stop (for CI)
#
# What it runs (all in the background, stopped on exit):
#   - three echo backends on 127.0.0.11-13:3000, the clusterIPs of the Services
#     in the example (Linux routes all of 127.0.0.0/8 to the loopback device);
#   - `kengine-gateway standalone`, which starts Kengine (or Caddy 2.8.4) with
#     its admin API on a private unix socket, translates the YAML and pushes
#     the config. The Gateway listens on 127.0.0.1:8080.
#
# Environment:
#   KENGINE_BIN       kengine or caddy binary to use (see scripts/ensure-kengine.sh)
#   CARGO_TARGET_DIR  honoured when locating the built kengine-gateway binary
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

CHECK=0
while (($#)); do
  case "$1" in
    --check) CHECK=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "quickstart: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLE="deploy/examples/quickstart.yaml"
GATEWAY_URL="http://127.0.0.1:8080"
ECHOS=("127.0.0.11:3000 app-v1" "127.0.0.12:3000 app-v2" "127.0.0.13:3000 docs")

say() { echo "==> $*" >&2; }
die() { echo "quickstart: error: $*" >&2; exit 1; }

command -v curl >/dev/null || die "curl is required but not installed (on Debian/Ubuntu: apt-get install curl)"
command -v cargo >/dev/null || die "cargo is required but not on PATH (install Rust with rustup)"

# Our own requests must never go through an HTTP proxy from the environment.
CURL=(curl --noproxy '*')

# --- the data plane binary -------------------------------------------------
# Resolved before changing directory, so a relative KENGINE_BIN still works.
BIN="$("$REPO/scripts/ensure-kengine.sh")"
export KENGINE_BIN="$BIN"
case "$(basename "$BIN")" in
  kengine*) FLAVOR=kengine ;;
  *) FLAVOR=caddy ;;
esac
cd "$REPO"

# --- build ------------------------------------------------------------------
say "building kengine-gateway (cargo build, debug profile)"
cargo build --bin kengine-gateway
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
GW="$TARGET_DIR/debug/kengine-gateway"
[[ -x "$GW" ]] || die "$GW not found after cargo build (is build.target-dir set in a cargo config? set CARGO_TARGET_DIR)"
GW="$(cd "$(dirname "$GW")" && pwd)/$(basename "$GW")"

# --- preflight: is the Gateway's port free? ---------------------------------
# Exit code 7 means "connection refused": nothing listens there.
rc=0
"${CURL[@]}" -s -o /dev/null --max-time 2 "$GATEWAY_URL/" || rc=$?
[[ $rc -eq 7 ]] || die "something already listens on 127.0.0.1:8080 (an earlier quickstart still running?)"

# --- background processes and cleanup -----------------------------------------
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kengine-quickstart.XXXXXX")"
PIDS=()

# start_bg LOGFILE COMMAND...: run COMMAND in the background in its own process
# group (so cleanup can stop it together with any children, such as the
# kengine process that `standalone` starts) and with output to LOGFILE.
# Sets LAST_PID.
start_bg() {
  local log="$1"
  shift
  set -m
  "$@" >"$log" 2>&1 </dev/null &
  LAST_PID=$!
  set +m
  PIDS+=("$LAST_PID")
}

# is_running PID: true while that background job has not exited.
is_running() {
  local running
  running="$(jobs -rp)"
  [[ $'\n'"$running"$'\n' == *$'\n'"$1"$'\n'* ]]
}

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    say "stopping background processes"
    for pid in "${PIDS[@]}"; do
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    # Up to 10 s for a graceful stop (standalone stops its kengine child).
    for ((i = 0; i < 100; i++)); do
      [[ -z "$(jobs -rp)" ]] && break
      sleep 0.1
    done
    # Whatever is still left in those process groups does not get to linger
    # (a leftover kengine would hold port 8080 for the next run).
    for pid in "${PIDS[@]}"; do
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
      wait "$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show_log FILE: the end of a log, for a failure message.
show_log() {
  echo "---- last lines of $(basename "$1") ----" >&2
  tail -n 40 "$1" >&2 2>/dev/null || true
  echo "----" >&2
}

# --- echo backends ----------------------------------------------------------------
ECHO_PIDS=()
for entry in "${ECHOS[@]}"; do
  read -r addr name <<<"$entry"
  say "starting echo backend $name on $addr"
  start_bg "$RUN_DIR/echo-$name.log" "$GW" echo --listen "$addr" --name "$name"
  ECHO_PIDS+=("$LAST_PID")
done
for ((i = 0; i < ${#ECHOS[@]}; i++)); do
  read -r addr name <<<"${ECHOS[$i]}"
  ready=0
  for ((t = 0; t < 100; t++)); do
    if "${CURL[@]}" -s -o /dev/null --max-time 1 "http://$addr/"; then
      ready=1
      break
    fi
    if ! is_running "${ECHO_PIDS[$i]}"; then
      show_log "$RUN_DIR/echo-$name.log"
      die "echo backend $name exited (is $addr free and a loopback address on this host?)"
    fi
    sleep 0.1
  done
  ((ready)) || { show_log "$RUN_DIR/echo-$name.log"; die "echo backend $name did not answer on $addr within 10 s"; }
done

# --- the gateway ------------------------------------------------------------------
say "starting kengine-gateway standalone with $BIN (flavor $FLAVOR)"
# Kengine autosaves its config; keep that out of the user's home directory.
mkdir -p "$RUN_DIR/xdg-config" "$RUN_DIR/xdg-data"
start_bg "$RUN_DIR/gateway.log" \
  env XDG_CONFIG_HOME="$RUN_DIR/xdg-config" XDG_DATA_HOME="$RUN_DIR/xdg-data" \
  "$GW" standalone -f "$EXAMPLE" --kengine "$BIN" --flavor "$FLAVOR" \
  --status-file "$RUN_DIR/status.yaml"
GW_PID=$LAST_PID

say "waiting for http://127.0.0.1:8080/ (Host: app.example.com) to answer 200"
code=000
for ((t = 0; t < 60; t++)); do
  code="$("${CURL[@]}" -s -o /dev/null -w '%{http_code}' --max-time 2 \
    -H 'Host: app.example.com' "$GATEWAY_URL/" || true)"
  [[ "$code" == 200 ]] && break
  if ! is_running "$GW_PID"; then
    show_log "$RUN_DIR/gateway.log"
    die "kengine-gateway standalone exited"
  fi
  sleep 0.5
done
if [[ "$code" != 200 ]]; then
  show_log "$RUN_DIR/gateway.log"
  die "the gateway did not answer 200 within 30 s (last HTTP status: $code)"
fi

# --- --check: verify the routing and stop ---------------------------------------------
if ((CHECK)); then
  failures=()

  # Weighted split: 80 % app-v1, 20 % app-v2.
  v1=0 v2=0 other=0
  for ((i = 0; i < 100; i++)); do
    body="$("${CURL[@]}" -s --max-time 5 -H 'Host: app.example.com' "$GATEWAY_URL/" || true)"
    case "$body" in
      *'"pod":"app-v1"'*) v1=$((v1 + 1)) ;;
      *'"pod":"app-v2"'*) v2=$((v2 + 1)) ;;
      *) other=$((other + 1)) ;;
    esac
  done
  if ((v1 == 0 || v2 == 0 || v1 < 70 || v1 > 90 || other > 0)); then
    failures+=("app.example.com: app-v1=$v1 app-v2=$v2 other=$other of 100, want both > 0 and app-v1 in 70..90")
  fi

  # PathPrefix /docs reaches the docs backend.
  resp="$("${CURL[@]}" -s --max-time 5 -w '\n%{http_code}' -H 'Host: docs.example.com' \
    "$GATEWAY_URL/docs/intro" || true)"
  docs_code="${resp##*$'\n'}"
  docs_body="${resp%$'\n'*}"
  if [[ "$docs_code" != 200 || "$docs_body" != *'"pod":"docs"'* ]]; then
    failures+=("docs.example.com/docs/intro: HTTP $docs_code, body ${docs_body:0:200}, want 200 from pod docs")
  fi

  # No rule matches /other on docs.example.com.
  other_code="$("${CURL[@]}" -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'Host: docs.example.com' "$GATEWAY_URL/other" || true)"
  if [[ "$other_code" != 404 ]]; then
    failures+=("docs.example.com/other: HTTP $other_code, want 404")
  fi

  if ((${#failures[@]})); then
    for f in "${failures[@]}"; do
      echo "quickstart check: FAIL: $f" >&2
    done
    show_log "$RUN_DIR/gateway.log"
    exit 1
  fi
  echo "quickstart check: PASS: app.example.com app-v1=$v1 app-v2=$v2 of 100;" \
    "docs.example.com/docs/intro 200 from docs; docs.example.com/other 404"
  exit 0
fi

# --- interactive: print what to try and wait ------------------------------------------
cat <<EOF

The quickstart Gateway is serving on http://127.0.0.1:8080 (data plane: $BIN).

Try:

  # 80 % of requests go to app-v1, 20 % to app-v2; the JSON field "pod" names the backend
  curl -H 'Host: app.example.com' http://127.0.0.1:8080/

  # PathPrefix /docs on docs.example.com reaches the docs backend
  curl -H 'Host: docs.example.com' http://127.0.0.1:8080/docs/intro

  # no rule matches: 404
  curl -i -H 'Host: docs.example.com' http://127.0.0.1:8080/other

Edit $EXAMPLE and the change is applied live.
The Kengine config it produces: $GW render -f $EXAMPLE --flavor $FLAVOR

Status of every object: $RUN_DIR/status.yaml
Logs:                   $RUN_DIR/gateway.log
                        $RUN_DIR/echo-{app-v1,app-v2,docs}.log
(removed on exit)

Press Ctrl-C to stop.
EOF

# Waits until Ctrl-C (the INT trap exits and cleans up) or until the gateway dies.
rc=0
wait "$GW_PID" || rc=$?
show_log "$RUN_DIR/gateway.log"
die "kengine-gateway standalone exited unexpectedly (exit status $rc)"
