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


def test_metrics_pushed_to_a_real_pushgateway(pushgateway: str, tmp_path: Path) -> None:
    """pushadd of the pipeline's state: one stored window, 50 of 1000 lost at the lake (5 %,
    over 1 %), then a clean window after it: the lake is still breached (1 window of the
    horizon), with its worst loss ratio, while the run's last window is clean."""
    from datetime import UTC, datetime, timedelta

    from recon.alerts.dispatch import publish_and_notify
    from recon.config import parse_config
    from recon.model import StageMetrics, Window, WindowResult
    from recon.store import ResultStore

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
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    store.upgrade()
    start = datetime(2026, 11, 27, tzinfo=UTC)
    run_id = store.start_run("payments", start, start + timedelta(hours=2), "digest")
    for hour, lost in ((0, 50), (1, 0)):
        lake = StageMetrics("lake", upstream=1000, arrived=1000 - lost, lost=lost, breach=lost > 0)
        e2e = StageMetrics("end_to_end", upstream=1000, arrived=1000 - lost, lost=lost)
        e2e.breach = lost > 0
        window = WindowResult(
            "payments",
            Window(start + timedelta(hours=hour), start + timedelta(hours=hour + 1)),
            "breach" if lost else "ok",
            1000,
            [StageMetrics("webhook", upstream=1000, arrived=1000), lake],
            e2e,
            run_id=run_id,
        )
        store.save_window(window, {"lake": cfg.thresholds_for("lake")})
    store.finish_run(run_id, "breach")
    publish_and_notify(cfg, store, start + timedelta(hours=3))
    text = urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5).read().decode()
    labels = 'instance="",job="recon",pipeline="payments",stage="lake"'
    assert f"recon_loss_ratio{{{labels}}} 0.05" in text
    assert f"recon_lost_events{{{labels}}} 50" in text
    assert f"recon_breach{{{labels}}} 1" in text
    assert f"recon_breached_windows{{{labels}}} 1" in text
    e2e_labels = labels.replace('stage="lake"', 'stage="end_to_end"')
    assert f"recon_breach{{{e2e_labels}}} 0" in text  # the lake pages, not end to end too
    assert (
        'recon_last_success_timestamp_seconds{instance="",job="recon",pipeline="payments"}' in text
    )
