"""The shipped Prometheus rules, tested with `promtool test rules` (Debian's prometheus)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_promtool_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool not found: scripts/setup.sh installs Debian's prometheus package"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [promtool, "check", "rules", "../../alerts/recon.rules.yml"],
        cwd=HERE / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [promtool, "test", "rules", "recon_rules_test.yml"],
        cwd=HERE / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
