"""Intraday early warning every 15 minutes: per-hop counts over the last 3 hours.

Counts only (Kafka offsets, parquet footers, SQL count(*)), so a 30 % drop at one
hop fails this DAG's task within the hour; the nightly ID-level run settles it.
Variables as for recon_nightly, plus recon_check_max_drop (default 0.05).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DeltaDataIntervalTimetable, Variable, dag, task
from airflow.sdk.exceptions import AirflowFailException


@dag(
    dag_id="recon_intraday",
    schedule=DeltaDataIntervalTimetable(timedelta(minutes=15)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["recon"],
)
def recon_intraday() -> None:
    """Flag a hop whose count dropped above the threshold."""

    @task(retries=2, retry_delay=timedelta(minutes=1))
    def early_warning(data_interval_end: Any = None) -> None:
        from recon.airflow_tasks import config_paths
        from recon.airflow_tasks import early_warning as check

        flagged = check(
            config_paths(Variable.get("recon_configs", default=None)),
            data_interval_end,
            max_drop=float(Variable.get("recon_check_max_drop", default="0.05")),
            overrides=Variable.get("recon_overrides", default=None),
        )
        if flagged:
            raise AirflowFailException("count drop: " + "; ".join(flagged[:10]))

    early_warning()


recon_intraday()
