"""Runs one DAG with `dag.test()` in its own process (Airflow's state stays out of pytest).

    python tests/airflow_runner.py DAG_ID LOGICAL_DATE   (or --import)
Prints one line "RESULT {json}": the run's state and every task instance's state
(or the DagBag's import errors and DAG ids).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag


def main() -> None:
    bag = DagBag(dag_folder=str(Path(__file__).parent.parent / "airflow_dags"))
    if sys.argv[1] == "--import":
        print(
            "RESULT "
            + json.dumps(
                {
                    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
                    "dag_ids": sorted(bag.dag_ids),
                }
            )
        )
        return
    dag_id, logical_date = sys.argv[1], datetime.fromisoformat(sys.argv[2])
    conf = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    run = bag.get_dag(dag_id).test(logical_date=logical_date, run_conf=conf)
    tasks: dict[str, list[str]] = {}
    tries: dict[str, list[int]] = {}
    for ti in sorted(run.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index)):
        tasks.setdefault(ti.task_id, []).append(str(ti.state))
        tries.setdefault(ti.task_id, []).append(ti.try_number)
    print(
        "RESULT "
        + json.dumps(
            {
                "state": str(run.state),
                "tasks": tasks,
                "tries": tries,
                "interval": [str(run.data_interval_start), str(run.data_interval_end)],
                "asset_events": _asset_events(run),
            }
        )
    )


def _asset_events(run: object) -> list[list[object]]:
    """(asset URI, extra) of every asset event this run's tasks emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == run.run_id)  # type: ignore[attr-defined]
        ).all()
    return sorted([uri, extra] for uri, extra in rows)


if __name__ == "__main__":
    main()
