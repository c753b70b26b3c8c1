"""What the Airflow DAGs call, without Airflow: planning the night's windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from recon.airflow_tasks import night, plan
from recon.errors import ConfigError
from recon.model import StageMetrics, Window, WindowResult
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
    items = plan([str(config)], day, day + timedelta(days=1), windows_per_task=6)
    # 23:00 runs straight into the night's windows: the first task takes it and 5 more.
    assert [(i["start"][5:16], i["end"][5:16]) for i in items] == [
        ("11-26T23:00", "11-27T05:00"),
        ("11-27T05:00", "11-27T11:00"),
        ("11-27T11:00", "11-27T17:00"),
        ("11-27T17:00", "11-27T23:00"),
        ("11-27T23:00", "11-28T00:00"),
    ]
    assert len(plan([str(config)], day, day + timedelta(days=1), windows_per_task=1)) == 25


D = datetime(2026, 11, 28, tzinfo=UTC)
NIGHTS = [
    # data interval, day param, manual, logical date, expected, why
    ((D - timedelta(1), D), None, False, D, (D - timedelta(1), D), "scheduled: its interval"),
    ((None, None), None, True, None, (D, D + timedelta(1)), "manual: yesterday (now 11-29)"),
    ((None, None), None, True, D, (D - timedelta(1), D), "manual at 11-28: the day before"),
    ((D, D + timedelta(hours=13)), None, True, D + timedelta(hours=13),
     (D - timedelta(1), D), "manual, an interval from 'now': the last whole day"),
    ((D - timedelta(1), D), "2026-11-20", False, D,
     (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)), "the day param"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("interval", "day", "manual", "logical", "want", "why"), NIGHTS, ids=[n[-1] for n in NIGHTS]
)
def test_which_night_a_run_reconciles(interval, day, manual, logical, want, why) -> None:
    now = D + timedelta(days=1, hours=3)
    assert night(*interval, day=day, manual=manual, logical_date=logical, now=now) == want


def test_a_day_param_that_is_no_date_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="day: not a date"):
        night(None, None, day="yesterday", now=D)


def test_threshold_overrides_get_a_suite_of_their_own(tmp_path, monkeypatch) -> None:
    """The CLI wrote the suite of the file's thresholds (0.01 %); the DAG's recon_overrides
    raise them to 1 %: its suite lives in expectations/deployment/, so neither refuses the
    other's, and each still refuses a suite that disagrees with it."""
    from recon.airflow_tasks import load
    from recon.checks.expectations import ensure_suite, suite_path
    from recon.config import load_config

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


@pytest.mark.parametrize(
    ("results", "executor", "refused"),
    [
        ("r.sqlite", "LocalExecutor", False),
        ("r.sqlite", "CeleryExecutor", True),
        ("r.sqlite", "LocalExecutor,airflow.providers.celery.executors.CeleryExecutor", True),
        ("postgresql+psycopg://recon@db/recon", "KubernetesExecutor", False),
        ("r.sqlite", None, False),  # outside Airflow
    ],
)
def test_a_sqlite_store_is_refused_where_workers_do_not_share_it(
    tmp_path, results: str, executor: str | None, refused: bool
) -> None:
    """Each Celery or Kubernetes worker would write a SQLite file of its own: the plan stops
    with a configuration error naming the executor; a local executor shares the file."""
    from recon.airflow_tasks import shared_store
    from recon.config import load_config

    config = tmp_path / "p.yaml"
    stages = [{"name": "a", "source": "files", "path": "x"}, {"name": "b", "source": "files",
              "path": "y"}]  # fmt: skip
    config.write_text(yaml.safe_dump({"pipeline": "p", "results": results, "stages": stages}))
    cfg = load_config(config)
    if refused:
        with pytest.raises(ConfigError, match=f"executor {executor}"):
            shared_store(cfg, str(config), executor)
    else:
        shared_store(cfg, str(config), executor)
