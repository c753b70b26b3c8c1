"""The Airflow 3 DAGs: they import, and `dag.test()` runs them on planted data.

Each DAG run happens in its own process (tests/airflow_runner.py) with a fresh
AIRFLOW_HOME and SQLite metadata DB; configuration reaches the DAGs through
Airflow Variables set in the environment (AIRFLOW_VAR_*), as in production.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.store import ResultStore

from .conftest import missing_in_ci_fails
from .test_alerts import Receiver

ROOT = Path(__file__).parent.parent
# Three days back: alerts and metrics look at the last 7 days (window.horizon) from now.
DAY1 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
DAY2 = DAY1 + timedelta(days=1)


def _airflow(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow_dags"),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "airflow_runner.py"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("airflow") is None:
        missing_in_ci_fails("Airflow is not installed: scripts/setup.sh installs the extra")
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow_dags"),
    }
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return home


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_dags_import(airflow_home: Path) -> None:
    result = _airflow(airflow_home, "--import")
    assert result == {"import_errors": {}, "dag_ids": ["recon_intraday", "recon_nightly"]}


def _planted_days(pg_url: str, bootstrap: str, unique: str, tmp_path: Path) -> Path:
    """Two days x 24 h x 100 events; day 1's lake loses 30 % from 02:00 to 10:00."""
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(
        plan(
            Scenario(
                start=DAY1,
                hours=48,
                events_per_hour=100,
                seed=13,
                lake_loss=lambda h: 0.3 if 2 <= h < 10 else 0.0,
            )
        ),
        targets,
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, results="results.sqlite")))
    return config


def test_nightly_dag_pages_once_per_incident_and_announces_clean_nights(
    airflow_home, pg_url, bootstrap, unique, tmp_path, receiver
) -> None:
    """Day 1: the lake loses 30 % from 02:00 to 10:00. Day 2: clean. The day-1 run maps its 24
    windows to 4 tasks of 6 (all succeed, all 24 stored), the gate sends exactly one trigger
    (lake, 30 of 100 lost in the worst window, 8 windows breached), nothing is announced and
    the verdict task fails. The day-2 run succeeds, announces the pipeline on its Asset, and
    sends nothing: day 1's windows are still breached within the 7-day horizon (before,
    a clean night resolved the incident)."""
    config = _planted_days(pg_url, bootstrap, unique, tmp_path)
    variables = {
        "AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)]),
        "AIRFLOW_VAR_RECON_OVERRIDES": json.dumps(
            {"alerts": {"routes": [{"kind": "webhook", "url": f"{receiver.url}/hook"}]}}
        ),
    }
    night1 = _airflow(airflow_home, "recon_nightly", DAY2.isoformat(), env=variables)
    assert night1["state"] == "failed"
    assert night1["tasks"]["reconcile"] == ["success"] * 4
    assert night1["tasks"]["gate"] == ["success"]
    assert night1["tasks"]["verdict"] == ["failed"]
    assert night1["asset_events"] == []
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    windows = store.windows(unique)
    assert len(windows) == 24
    assert windows["window_start"].iloc[0].to_pydatetime() == DAY1
    assert list(windows["status"]) == ["ok"] * 2 + ["breach"] * 8 + ["ok"] * 14
    notices = receiver.take()
    assert [
        (p, b["action"], b["stage"], b["breached_windows"], b["lost"], b["upstream"])
        for p, b in notices
    ] == [("/hook", "trigger", "lake", 8, 30, 100)]

    night2 = _airflow(
        airflow_home, "recon_nightly", (DAY2 + timedelta(days=1)).isoformat(), env=variables
    )
    assert night2["state"] == "success"
    assert night2["tasks"]["reconcile"] == ["success"] * 4
    assert night2["asset_events"] == [[f"recon://{unique}/reconciled", {"pipeline": unique}]]
    assert receiver.take() == []


def test_a_manual_run_reconciles_its_day_and_a_bad_config_is_not_retried(
    airflow_home, pg_url, bootstrap, unique, tmp_path
) -> None:
    """A manual run with the param day = day 2 reconciles day 2's 24 windows (Airflow 3 gives
    a manual run no data interval: it used to fail on 'None'). Then the pipeline's suite file
    is made to disagree with its thresholds (a configuration error, exit 2): each reconcile
    task fails on its first try instead of being retried for half an hour. The receipts
    table is reached through an Airflow Connection kept in Airflow's metadata database (no
    URL in the YAML, no AIRFLOW_CONN_ variable: Airflow's own backends resolve it)."""
    config = _planted_days(pg_url, bootstrap, unique, tmp_path)
    data = yaml.safe_load(config.read_text())
    webhook = data["stages"][0]
    conn_id = f"{unique}_receipts"
    url = webhook.pop("url").replace("postgresql+psycopg://", "postgres://")
    webhook["connection"] = conn_id
    config.write_text(yaml.safe_dump(data))
    added = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "connections", "add", conn_id,
         "--conn-uri", url],
        env={**os.environ, "AIRFLOW_HOME": str(airflow_home)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr[-2000:]
    assert f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ
    variables = {"AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)])}
    day2 = DAY2.date().isoformat()
    manual = _airflow(
        airflow_home, "recon_nightly", (DAY2 + timedelta(days=5)).isoformat(),
        json.dumps({"day": day2}), env=variables,
    )  # fmt: skip
    assert manual["state"] == "success", manual
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    starts = store.windows(unique)["window_start"]
    assert (starts.min().to_pydatetime(), starts.max().to_pydatetime(), len(starts)) == (
        DAY2,
        DAY2 + timedelta(hours=23),
        24,
    )
    suite = tmp_path / "expectations" / f"{unique}.json"
    data = json.loads(suite.read_text())
    data["expectations"][0]["kwargs"]["max_value"] = 0.5
    suite.write_text(json.dumps(data))
    broken = _airflow(airflow_home, "recon_nightly", DAY2.isoformat(), env=variables)
    assert broken["state"] == "failed"
    assert broken["tasks"]["reconcile"] == ["failed"] * 4
    assert broken["tries"]["reconcile"] == [1] * 4


def test_intraday_dag_flags_the_drop_and_stays_quiet_when_clean(
    airflow_home, pg_url, bootstrap, unique, tmp_path
) -> None:
    """Counts only over the 3 hours before the interval's end: 30 % lake drop -> the task
    fails; clean hours -> it succeeds."""
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(
        plan(
            Scenario(
                start=DAY1,
                hours=6,
                events_per_hour=600,
                seed=17,
                lake_loss=lambda h: 0.3 if h >= 3 else 0.0,
            )
        ),
        targets,
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, results="results.sqlite")))
    variables = {"AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)])}
    clean = _airflow(
        airflow_home, "recon_intraday", (DAY1 + timedelta(hours=3)).isoformat(), env=variables
    )
    dropped = _airflow(
        airflow_home, "recon_intraday", (DAY1 + timedelta(hours=6)).isoformat(), env=variables
    )
    assert (clean["state"], dropped["state"]) == ("success", "failed"), (clean, dropped)
