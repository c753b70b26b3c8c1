"""The shipped Prometheus rules, tested with `promtool test rules` (Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from . import promstack
from .conftest import missing_in_ci_fails

HERE = Path(__file__).parent


def test_promtool_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_in_ci_fails("promtool not found: scripts/setup.sh installs Debian's prometheus")
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


# A fresh Pushgateway of its own (tests/promstack.py), never Debian's shared persistence file.
pushgateway = promstack.pushgateway


def test_metrics_pushed_to_a_real_pushgateway(pushgateway: str) -> None:
    """pushadd of a run with one window: 50 of 1000 lost at the lake (5 %, over 1 %)."""
    from datetime import UTC, datetime, timedelta

    from recon.alerts.prometheus import publish
    from recon.config import parse_config
    from recon.engine.runner import RunReport
    from recon.model import StageMetrics, Window, WindowResult

    cfg = parse_config(
        {
            "pipeline": "payments",
            "thresholds": {"loss_rate": 0.01},
            "metrics": {"pushgateway": pushgateway},
            "stages": [
                {"name": "webhook", "source": "files", "path": "x"},
                {"name": "lake", "source": "files", "path": "y"},
            ],
        }
    )
    start = datetime(2026, 11, 27, tzinfo=UTC)
    lake = StageMetrics("lake", upstream=1000, arrived=950, lost=50, breach=True)
    e2e = StageMetrics("end_to_end", upstream=1000, arrived=950, lost=50, breach=True)
    window = WindowResult(
        "payments",
        Window(start, start + timedelta(hours=1)),
        "breach",
        1000,
        [StageMetrics("webhook", upstream=1000, arrived=1000), lake],
        e2e,
    )
    publish(cfg, RunReport("payments", "run-1", [window]), last_success=start)
    text = urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5).read().decode()
    labels = 'instance="",job="recon",pipeline="payments",stage="lake"'
    assert f"recon_loss_ratio{{{labels}}} 0.05" in text
    assert f"recon_lost_events{{{labels}}} 50" in text
    assert f"recon_breach{{{labels}}} 1" in text
    assert (
        'recon_last_success_timestamp_seconds{instance="",job="recon",pipeline="payments"}' in text
    )
