"""What each command imports before it does any work, and how long that takes.

Each in a fresh Python process (median of --repeat): the modules a command's
function imports, then whether Great Expectations came with them (only `run`
and `expectations --write`'s gate need it; it is imported on the gate's first use).

    .venv/bin/python bench/import_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

COMMANDS = {
    "--version": ["recon.cli"],
    "check": ["recon.cli", "recon.config", "recon.engine.early_warning"],
    "explain": ["recon.cli", "recon.config", "recon.engine.explain"],
    "dashboard": ["recon.cli", "recon.config", "recon.store", "recon.web.app"],
    "db": ["recon.cli", "recon.config", "recon.store"],
    "run": ["recon.cli", "recon.config", "recon.engine.runner", "recon.report"],
    "run's gate (GX)": ["great_expectations"],
}
PROBE = """
import importlib, json, sys, time
started = time.perf_counter()
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps({{"s": time.perf_counter() - started,
                   "gx": "great_expectations" in sys.modules}}))
"""


def measure(modules: list[str]) -> dict[str, object]:
    """Import `modules` in a fresh interpreter: seconds, and whether GX was imported."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    """Print each command's median import time and whether it loads GX."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for command, modules in COMMANDS.items():
        runs = [measure(modules) for _ in range(args.repeat)]
        seconds = statistics.median(float(str(r["s"])) for r in runs)
        print(f"{command:18} {seconds:5.2f} s  imports GX: {runs[0]['gx']}")


if __name__ == "__main__":
    main()
