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
DAY1 = datetime(2026, 11, 24, tzinfo=UTC)
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


def test_nightly_dag_breach_pages_once_and_clean_night_resolves(
    airflow_home, pg_url, bootstrap, unique, tmp_path, receiver
) -> None:
    """Two planted days x 24 h x 100 events. Day 1: the lake loses 30 % from 02:00 to 10:00.
    Day 2: clean. The day-1 run maps 24 windows (all succeed, all stored), its gate fails,
    and the receiver gets exactly one trigger (lake, 30 of 100 lost in the worst window).
    The day-2 run succeeds and sends exactly one resolve."""
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
    variables = {
        "AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)]),
        "AIRFLOW_VAR_RECON_OVERRIDES": json.dumps(
            {"alerts": {"routes": [{"kind": "webhook", "url": f"{receiver.url}/hook"}]}}
        ),
    }
    night1 = _airflow(airflow_home, "recon_nightly", DAY2.isoformat(), env=variables)
    assert night1["interval"] == ["2026-11-24 00:00:00+00:00", "2026-11-25 00:00:00+00:00"]
    assert night1["state"] == "failed"
    assert night1["tasks"]["reconcile"] == ["success"] * 24
    assert night1["tasks"]["gate"] == ["failed"]
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    windows = store.windows(unique)
    assert len(windows) == 24
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
    assert night2["tasks"]["reconcile"] == ["success"] * 24
    assert [(b["action"], b["stage"]) for _, b in receiver.take()] == [("resolve", "lake")]


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
