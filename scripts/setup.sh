#!/usr/bin/env bash
# Creates .venv with recon and its test/dev extras, then starts the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,airflow]"
# promtool (Debian's prometheus) tests the shipped alerting rules; the metrics tests
# push to a real Pushgateway (Debian's prometheus-pushgateway).
# The dashboard tests drive Debian's chromium with Playwright (no browser download).
if ! command -v promtool >/dev/null || [ ! -x /usr/bin/prometheus-pushgateway ] \
    || [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  packages="prometheus prometheus-pushgateway chromium"
  apt-get install -y -qq $packages >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq $packages >/dev/null; }
fi
scripts/services.sh up
