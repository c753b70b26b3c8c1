"""Nightly reconciliation: the previous day as hourly windows, mapped across workers.

Configuration comes from Airflow Variables (or the environment):
  recon_configs           JSON list of pipeline config paths (env RECON_CONFIGS)
  recon_overrides         JSON of top-level config keys to override: thresholds, alerts
                          (routes, renotify), metrics, results (env RECON_OVERRIDES)
  recon_windows_per_task  consecutive windows one mapped task reconciles (default 6)
A manual run reconciles the DAG param `day` (YYYY-MM-DD), else the day of its
logical date, else yesterday; a scheduled run or a backfill its data interval.
A source or store error (recon exit code 3) fails the task, which Airflow retries
with exponential backoff; a configuration error (exit 2) or a bug fails at once.
A breach is not retried: the `verdict` task fails, once, after the notices. Each
pipeline whose night had no breach is announced on its Asset
`recon://<pipeline>/reconciled`, which downstream DAGs can be scheduled on.
Windows still incomplete from earlier nights are re-run and restated.
A pipeline config with `shards: {above_events, count, directory}` splits each window
whose origin counts more than `above_events` rows into `count` mapped shard tasks; each
writes its partial result under `directory` (storage every worker shares) and the
`merge` task stores the window merged from them (docs/operations.md, "Sharding").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import (
    AssetAlias,
    CronDataIntervalTimetable,
    Param,
    Variable,
    dag,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

RECONCILED = AssetAlias("recon-reconciled")


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
    params={
        "day": Param(
            None,
            type=["null", "string"],
            description="UTC day to reconcile (YYYY-MM-DD); default: the run's own day",
        )
    },
    tags=["recon"],
)
def recon_nightly() -> None:
    """Plan the windows, reconcile them as mapped tasks, then gate, announce and judge."""

    @task
    def plan_windows(
        params: Any = None,
        dag_run: Any = None,
        logical_date: Any = None,
        data_interval_start: Any = None,
        data_interval_end: Any = None,
    ) -> list:
        from datetime import UTC

        from airflow.configuration import conf

        from recon.airflow_tasks import config_paths, night, plan

        start, end = night(
            data_interval_start,
            data_interval_end,
            day=(params or {}).get("day"),
            manual=str(getattr(dag_run, "run_type", "")).endswith("manual"),
            logical_date=logical_date,
            now=datetime.now(UTC),
        )
        return plan(
            config_paths(_variable("recon_configs")),
            start,
            end,
            _variable("recon_overrides"),
            int(_variable("recon_windows_per_task") or 6),
            executor=conf.get("core", "executor"),
            now=datetime.now(UTC),
        )

    @task(
        retries=3,
        retry_delay=timedelta(minutes=2),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=30),
    )
    def reconcile(item: dict) -> dict:
        from recon.airflow_tasks import reconcile_item
        from recon.errors import ReconError

        try:
            return reconcile_item(item, _variable("recon_overrides"))
        except ReconError as exc:
            if exc.exit_code != 3:  # a bad configuration will not heal by retrying
                raise AirflowFailException(str(exc)) from exc
            raise  # a source or the store unavailable: retried

    @task(
        retries=3,
        retry_delay=timedelta(minutes=2),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=30),
    )
    def merge(results: list) -> list:
        from recon.airflow_tasks import merge_shards
        from recon.errors import ReconError

        # Sharded windows: merged from their shards' partials, gated and stored as one.
        try:
            return merge_shards(results[:], _variable("recon_overrides"))
        except ReconError as exc:
            if exc.exit_code != 3:
                raise AirflowFailException(str(exc)) from exc
            raise  # the store unavailable: retried, the partials are still there

    @task(retries=0)
    def gate(results: list) -> dict:
        from datetime import UTC

        from recon.airflow_tasks import gate as gate_windows

        # A slice is one request for every mapped result; list() walked them one by one
        # until a 404, which logged an "XCom not found" error on every night.
        return gate_windows(results[:], datetime.now(UTC), _variable("recon_overrides"))

    @task(outlets=[RECONCILED])
    def announce(breached: dict, outlet_events: Any = None) -> list:
        from airflow.sdk import Asset

        from recon.airflow_tasks import asset_uri

        clean = sorted(p for p, windows in breached.items() if not windows)
        for pipeline in clean:
            outlet_events[RECONCILED].add(Asset(asset_uri(pipeline)), extra={"pipeline": pipeline})
        return clean

    @task(retries=0)
    def verdict(breached: dict) -> None:
        found = [w for windows in breached.values() for w in windows]
        if found:
            raise AirflowFailException(
                f"loss above threshold in {len(found)} window(s): " + "; ".join(found[:10])
            )

    judged = gate(merge(reconcile.expand(item=plan_windows())))
    announce(judged)
    verdict(judged)


recon_nightly()
