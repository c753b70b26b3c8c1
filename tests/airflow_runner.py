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
    run = bag.get_dag(dag_id).test(logical_date=logical_date)
    tasks: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        tasks.setdefault(ti.task_id, []).append(str(ti.state))
    print(
        "RESULT "
        + json.dumps(
            {
                "state": str(run.state),
                "tasks": tasks,
                "interval": [str(run.data_interval_start), str(run.data_interval_end)],
            }
        )
    )


if __name__ == "__main__":
    main()
