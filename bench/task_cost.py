"""The fixed cost of one mapped Airflow task: a fresh process reconciling N windows.

Plants 24 hours x E events (the simulator's pipeline: receipts table, topic, lake,
dead letters), then times, each in a fresh Python process as Airflow's task runner
starts one (imports included, planting not timed):
  - importing recon's airflow_tasks module alone;
  - `reconcile_item` of one window (the DAG before: 24 such tasks a night);
  - `reconcile_item` of 6 consecutive windows (the DAG now: 4 tasks a night).

    .venv/bin/python bench/task_cost.py [--events-per-hour 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan

PG = "postgresql+psycopg://recon@127.0.0.1:5432/recon"
KAFKA = "127.0.0.1:9092"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def _timed(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    """Plant, then print the median seconds of each shape over --repeat runs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events-per-hour", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recon-task-cost-"))
    targets = Targets(PG, KAFKA, work / "lake", f"tc{uuid.uuid4().hex[:8]}")
    plant(plan(Scenario(start=DAY, hours=24, events_per_hour=args.events_per_hour)), targets)
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, results="results.sqlite")))

    def item(hours: int) -> str:
        end = DAY + timedelta(hours=hours)
        return json.dumps({"config": str(config), "start": DAY.isoformat(), "end": end.isoformat()})

    shapes = {
        "import recon.airflow_tasks": "import recon.airflow_tasks",
        "1 window a task": f"from recon.airflow_tasks import reconcile_item; "
        f"reconcile_item({item(1)})",
        "6 windows a task": f"from recon.airflow_tasks import reconcile_item; "
        f"reconcile_item({item(6)})",
    }
    _timed(shapes["1 window a task"])  # warm the page cache, write the suite
    for name, code in shapes.items():
        runs = [_timed(code) for _ in range(args.repeat)]
        print(f"{name:28} median {statistics.median(runs):6.2f} s  runs {runs}")
    one = statistics.median(_timed(shapes["1 window a task"]) for _ in range(args.repeat))
    six = statistics.median(_timed(shapes["6 windows a task"]) for _ in range(args.repeat))
    print(f"a night of 24 windows: 24 tasks x {one:.2f} s = {24 * one:.1f} s of task time; "
          f"4 tasks x {six:.2f} s = {4 * six:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
