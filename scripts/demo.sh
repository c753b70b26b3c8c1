#!/usr/bin/env bash
# Sets everything up, plants the 30 % incident into the real servers and reconciles it.
# `recon demo` exits 1 because it finds the planted breach; that is the demo working.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
status=0
.venv/bin/recon demo --workdir demo-work "$@" || status=$?
if [ "$status" -eq 1 ]; then
  echo "demo: the planted breach was found (recon's exit code 1 = breach), as expected"
  exit 0
fi
exit "$status"
