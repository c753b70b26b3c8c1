#!/usr/bin/env bash
# Sets everything up, then lints and runs the whole test suite against the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # strict, on recon/ ([tool.mypy] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
