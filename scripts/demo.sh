#!/usr/bin/env bash
# Sets everything up, plants the 30 % incident into the real servers and reconciles it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/recon demo --workdir demo-work "$@"
