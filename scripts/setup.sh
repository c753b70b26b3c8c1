#!/usr/bin/env bash
# Creates .venv with recon and its test/dev extras, then starts the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
scripts/services.sh up
