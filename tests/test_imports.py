"""Commands that do not gate never pay for Great Expectations (~3.8 s to import here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "great_expectations")))
"""


@pytest.mark.parametrize(
    "modules",
    [
        ["recon.cli", "recon.config", "recon.engine.early_warning"],
        ["recon.cli", "recon.config", "recon.engine.explain"],
        ["recon.cli", "recon.config", "recon.store", "recon.web.app"],
        ["recon.cli", "recon.config", "recon.store", "recon.alerts.state"],
        ["recon.api", "recon.airflow_tasks", "recon.engine.runner"],
    ],
    ids=["check", "explain", "dashboard", "db and alerts", "run before its gate"],
)
def test_a_command_that_does_not_gate_does_not_import_great_expectations(
    modules: list[str],
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
