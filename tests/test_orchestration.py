"""What the Airflow DAGs call, without Airflow: planning the night's windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from recon.model import StageMetrics, Window, WindowResult
from recon.orchestration import plan
from recon.store import ResultStore

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_nightly_plan_restates_incomplete_windows(tmp_path) -> None:
    """The night of 2026-11-28 plans its 24 windows plus the 2026-11-26 23:00 window, whose
    latest result is still incomplete; an older incomplete one (9 days) and an ok one are not
    re-run."""
    config = tmp_path / "p.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "p",
                "results": "r.sqlite",
                "stages": [
                    {"name": "a", "source": "files", "path": "x"},
                    {"name": "b", "source": "files", "path": "y"},
                ],
            }
        )
    )
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    run_id = store.start_run("p", NOW, NOW, "d")
    for day, hour, status in ((26, 23, "incomplete"), (18, 5, "incomplete"), (26, 22, "ok")):
        start = datetime(2026, 11, day, hour, tzinfo=UTC)
        result = WindowResult(
            "p",
            Window(start, start + timedelta(hours=1)),
            status,
            0,
            [StageMetrics("a"), StageMetrics("b")],
            StageMetrics("end_to_end"),
            run_id=run_id,
        )
        store.save_window(result, {})
    day = datetime(2026, 11, 27, tzinfo=UTC)
    items = plan([str(config)], day, day + timedelta(days=1))
    assert len(items) == 25
    assert items[0]["start"] == "2026-11-26T23:00:00+00:00"
    assert items[1]["start"] == "2026-11-27T00:00:00+00:00"


def test_threshold_overrides_get_a_suite_of_their_own(tmp_path, monkeypatch) -> None:
    """The CLI wrote the suite of the file's thresholds (0.01 %); the DAG's recon_overrides
    raise them to 1 %: its suite lives in expectations/deployment/, so neither refuses the
    other's, and each still refuses a suite that disagrees with it."""
    from recon.checks.expectations import ensure_suite, suite_path
    from recon.config import load_config
    from recon.orchestration import load

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "p.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "p",
                "thresholds": {"loss_rate": 0.0001},
                "stages": [
                    {"name": "a", "source": "files", "path": "x"},
                    {"name": "b", "source": "files", "path": "y"},
                ],
            }
        )
    )
    plain = load_config(config)
    ensure_suite(plain)
    deployed = load(str(config), '{"thresholds": {"loss_rate": 0.01}}')
    assert suite_path(deployed) == tmp_path / "expectations/deployment/p.json"
    ensure_suite(deployed)  # written
    ensure_suite(deployed)  # and checked: the same thresholds
    ensure_suite(plain)  # the file's suite is untouched
    assert ensure_suite(deployed)["expectations"][0]["kwargs"]["max_value"] == 0.01
