"""`recon_nightly` under Airflow 3's real components, not `dag.test()`.

`airflow api-server`, `airflow scheduler` (LocalExecutor, parallelism 2) and `airflow
dag-processor` run as processes of their own on a fresh PostgreSQL metadata database
(tests/airflow_stack.py); the runs are triggered with the CLI as an operator would, and
the tasks talk to the api-server's execution API. What is asserted comes from Airflow's
metadata database, recon's results store and a webhook receiver.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

import pytest
import yaml

from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.store import ResultStore

from .airflow_stack import AirflowStack
from .conftest import missing_in_ci_fails
from .test_alerts import Receiver

# Three days back: alerts and metrics look at the last 7 days (window.horizon) from now.
DAY1 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
DAY2 = DAY1 + timedelta(days=1)
DAG = "recon_nightly"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _trigger(af: AirflowStack, day: datetime) -> tuple[str, float]:
    """`airflow dags trigger recon_nightly -c '{"day": ...}'`: the run id, and the CLI's time."""
    t = monotonic()
    runs = af.cli_json("dags", "trigger", DAG, "-c", json.dumps({"day": day.date().isoformat()}))
    return runs[0]["dag_run_id"], monotonic() - t


def _tries(af: AirflowStack, run_id: str) -> dict[str, list[int]]:
    tries: dict[str, list[int]] = {}
    for ti in af.task_instances(run_id):
        tries.setdefault(ti["task_id"], []).append(ti["try_number"])
    return tries


def _asset_events(af: AirflowStack, run_id: str) -> list[tuple[str, Any]]:
    return af.query(
        "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE e.source_run_id = %s ORDER BY a.uri",
        run_id,
    )


def _report(
    tis: list[dict[str, Any]], day: datetime, results: Path, slots: dict[str, float]
) -> list[str]:
    """Each task instance: Airflow's queue wait and duration, the executor slot's time (the
    supervisor's, from fork to reaping the task process) and, for `reconcile`, recon's own
    run time (the results store's recon_runs)."""
    with sqlite3.connect(results) as db:
        recon = {
            start: (datetime.fromisoformat(end) - datetime.fromisoformat(begin)).total_seconds()
            for start, begin, end in db.execute(
                "SELECT range_start, started_at, finished_at FROM recon_runs"
            )
        }
    lines, beyond = [], []
    for ti in tis:
        label = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        wait = (ti["start"] - ti["queued"]).total_seconds()
        slot = slots.get(str(ti["id"]), float("nan"))
        line = (
            f"  {label:<13} {ti['state']:<8} queued {wait:5.2f} s  "
            f"duration {ti['duration']:5.2f} s  slot {slot:5.2f} s"
        )
        if ti["task_id"] == "reconcile":
            start = day + timedelta(hours=6 * ti["map_index"])
            own = recon[start.strftime("%Y-%m-%d %H:%M:%S.%f")]
            line += f"  recon {own:5.2f} s"
            beyond.append((ti["duration"] - own, slot - own))
        lines.append(line)
    lines.append(
        "  per mapped task beyond recon's own time: "
        f"{sum(b[0] for b in beyond) / len(beyond):.2f} s of task duration, "
        f"{sum(b[1] for b in beyond) / len(beyond):.2f} s of executor slot"
    )
    return lines


def test_nightly_dag_under_the_real_scheduler(pg_url, bootstrap, unique, tmp_path, receiver):
    """Planted: day 1 (3 days ago) and day 2, 24 h x 50 events each; day 1's lake loses
    30 % from 02:00 to 10:00. Two manual runs with the param `day`, one after the other.

    Day 1: the run fails (a breach): plan_windows, the 4 mapped `reconcile` tasks (24
    windows, 6 per task), `gate` and `announce` succeed, `verdict` fails, each on its first
    try; the results store holds exactly day 1's 24 windows, ok x2, breach x8, ok x14; the
    gate sent one trigger (lake, 8 windows breached, 15 of 50 lost in the first); no asset
    event. Day 2: the run succeeds, every task on its first try, the store holds 48 windows
    (day 2's 24 all ok), nothing is sent (day 1 is still breached within the horizon), and
    `announce` emitted exactly one asset event, on `recon://<pipeline>/reconciled` with
    extra {"pipeline": <pipeline>}.
    """
    if importlib.util.find_spec("airflow") is None:
        missing_in_ci_fails("Airflow is not installed: scripts/setup.sh installs the extra")
    began = monotonic()
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(
        plan(
            Scenario(
                start=DAY1,
                hours=48,
                events_per_hour=50,
                seed=13,
                lake_loss=lambda h: 0.3 if 2 <= h < 10 else 0.0,
            )
        ),
        targets,
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, results="results.sqlite")))
    results = tmp_path / "results.sqlite"
    variables = {
        "AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)]),
        "AIRFLOW_VAR_RECON_OVERRIDES": json.dumps(
            {"alerts": {"routes": [{"kind": "webhook", "url": f"{receiver.url}/hook"}]}}
        ),
    }
    timings = {"plant": monotonic() - began}
    first_try = {
        "announce": [1],
        "gate": [1],
        "merge": [1],
        "plan_windows": [1],
        "reconcile": [1] * 4,
        "verdict": [1],
    }

    with AirflowStack(tmp_path, pg_url, variables) as af:
        t = monotonic()
        unpause = af.cli("dags", "unpause", DAG)
        assert unpause.returncode == 0, unpause.stderr[-3000:]
        assert af.query("SELECT is_paused FROM dag WHERE dag_id = %s", DAG) == [(False,)]
        timings["unpause"] = monotonic() - t

        t = monotonic()
        night1, timings["trigger 1 (CLI)"] = _trigger(af, DAY1)
        assert af.wait_run(DAG, night1) == "failed", af.task_states(night1)
        timings["run 1 (trigger to end)"] = monotonic() - t
        assert af.task_states(night1) == {
            "announce": ["success"],
            "gate": ["success"],
            "merge": ["success"],
            "plan_windows": ["success"],
            "reconcile": ["success"] * 4,
            "verdict": ["failed"],
        }, af.task_errors(DAG, night1)
        assert _tries(af, night1) == first_try, af.task_errors(DAG, night1)
        windows = ResultStore(f"sqlite:///{results}").windows(unique)
        assert len(windows) == 24
        assert windows["window_start"].iloc[0].to_pydatetime() == DAY1
        assert list(windows["status"]) == ["ok"] * 2 + ["breach"] * 8 + ["ok"] * 14
        assert [
            (p, b["action"], b["stage"], b["breached_windows"], b["lost"], b["upstream"])
            for p, b in receiver.take()
        ] == [("/hook", "trigger", "lake", 8, 15, 50)]
        assert _asset_events(af, night1) == []

        t = monotonic()
        night2, timings["trigger 2 (CLI)"] = _trigger(af, DAY2)
        assert af.wait_run(DAG, night2) == "success", af.task_states(night2)
        timings["run 2 (trigger to end)"] = monotonic() - t
        assert af.task_states(night2) == {
            "announce": ["success"],
            "gate": ["success"],
            "merge": ["success"],
            "plan_windows": ["success"],
            "reconcile": ["success"] * 4,
            "verdict": ["success"],
        }, af.task_errors(DAG, night2)
        assert _tries(af, night2) == first_try, af.task_errors(DAG, night2)
        windows = ResultStore(f"sqlite:///{results}").windows(unique)
        assert len(windows) == 48
        assert list(windows["status"]) == ["ok"] * 2 + ["breach"] * 8 + ["ok"] * 38
        assert receiver.take() == []
        assert _asset_events(af, night2) == [(f"recon://{unique}/reconciled", {"pipeline": unique})]

        tis = {night1: af.task_instances(night1), night2: af.task_instances(night2)}

    # After the stop: the scheduler's log has every "Workload finished" line by then.
    slots = af.workload_seconds()
    print(
        f"\nAirflow under its real scheduler: {monotonic() - began:.1f} s in all",
        *(f"  {k:<24} {v:6.2f} s" for k, v in (timings | af.timings).items()),
        f"run 1 ({night1}), {DAY1.date()}:",
        *_report(tis[night1], DAY1, results, slots),
        f"run 2 ({night2}), {DAY2.date()}:",
        *_report(tis[night2], DAY2, results, slots),
        sep="\n",
    )
