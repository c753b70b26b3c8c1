"""Nightly reconciliation: the previous day as hourly windows, mapped across workers.

Configuration comes from Airflow Variables (or the environment):
  recon_configs    JSON list of pipeline config paths (env RECON_CONFIGS)
  recon_overrides  JSON of top-level config keys to override: thresholds, alerts
                   (routes, renotify), metrics, results (env RECON_OVERRIDES)
A source error (recon exit code 3) fails the window's task, which Airflow retries
with exponential backoff. A breach is not retried: the gate task fails, once, so
Airflow's own failure handling sees it, after one alert notice per breach.
Windows still incomplete from earlier nights are re-run and restated.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Variable, dag, task
from airflow.sdk.exceptions import AirflowFailException


def _variable(name: str) -> str | None:
    return Variable.get(name, default=None)


@dag(
    dag_id="recon_nightly",
    # A data-interval timetable: the run at 00:00 covers the whole previous day
    # (a bare cron string would give a zero-width interval).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recon"],
)
def recon_nightly() -> None:
    """Plan the windows, reconcile each as a mapped task, then gate and alert."""

    @task
    def plan_windows(data_interval_start: Any = None, data_interval_end: Any = None) -> list:
        from recon.orchestration import config_paths, plan

        return plan(
            config_paths(_variable("recon_configs")),
            data_interval_start,
            data_interval_end,
            _variable("recon_overrides"),
        )

    @task(
        retries=3,
        retry_delay=timedelta(minutes=2),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=30),
    )
    def reconcile(item: dict) -> dict:
        from recon.orchestration import reconcile_item

        return reconcile_item(item, _variable("recon_overrides"))

    @task(retries=0)
    def gate(results: list) -> None:
        from datetime import UTC

        from recon.orchestration import gate as gate_windows

        breached = gate_windows(list(results), datetime.now(UTC), _variable("recon_overrides"))
        if breached:
            raise AirflowFailException(
                f"loss above threshold in {len(breached)} window(s): " + "; ".join(breached[:10])
            )

    gate(reconcile.expand(item=plan_windows()))


recon_nightly()
