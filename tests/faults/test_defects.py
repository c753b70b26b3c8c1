"""Defects found by probing recon as a paranoid SRE would (issue 19), each planted again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from recon.cli import main
from recon.store import ResultStore

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def _pipeline(tmp_path: Path, **extra: object) -> Path:
    """A gateway log with one receipt every 10 minutes over 10:00-14:00, all in the lake."""
    times = [DAY.replace(hour=10) + timedelta(minutes=10 * i) for i in range(24)]
    gw = tmp_path / "gw"
    gw.mkdir(exist_ok=True)
    (gw / "a.jsonl").write_text(
        "".join(
            json.dumps({"event_id": f"e{i}", "received_at": t.isoformat()}) + "\n"
            for i, t in enumerate(times)
        )
    )
    lake = tmp_path / "lake" / "dt=2026-11-20"
    lake.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "event_id": [f"e{i}" for i in range(24)],
                "ingested_at": pa.array(
                    [t + timedelta(seconds=5) for t in times], pa.timestamp("us", tz="UTC")
                ),
            }
        ),
        lake / "part-0.parquet",
    )
    config = {
        "pipeline": "p",
        "stages": [
            {"name": "gateway", "source": "files", "path": str(gw / "*.jsonl")},
            {"name": "lake", "source": "parquet", "path": str(tmp_path / "lake")},
        ],
        **extra,
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path, start: str, end: str, *extra: str) -> int:
    args = ["run", "--config", str(config), "--start", start, "--end", end]
    return main([*args, "--now", "2026-11-21T00:00Z", *extra])


def test_misaligned_windows_are_refused_and_a_new_size_supersedes_what_it_covers(
    tmp_path: Path, capsys
) -> None:
    """--start 10:30 with hourly windows used to store [10:30, 11:30) beside [10:00, 11:00)
    as latest: now exit 2 naming the grid. Hours 10-12 stored, then the same range again
    as 30-minute windows: the 4 new windows are the latest, the 2 hourly ones history; no
    instant is covered twice by latest results."""
    config = _pipeline(tmp_path)
    assert _run(config, "2026-11-20T10:30Z", "2026-11-20T11:30Z") == 2
    assert "--start 2026-11-20T10:30:00Z is not on the 1:00:00 window grid" in (
        capsys.readouterr().err
    )
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T12:00Z") == 0
    data = yaml.safe_load(config.read_text())
    data["window"] = {"size": "30m"}
    config.write_text(yaml.safe_dump(data))
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T12:00Z") == 0
    store = ResultStore(f"sqlite:///{tmp_path / 'recon-results.sqlite'}")
    latest = store.windows("p")
    assert [(r.window_start.hour, r.window_start.minute) for r in latest.itertuples()] == [
        (10, 0), (10, 30), (11, 0), (11, 30),
    ]  # fmt: skip
    assert list(latest["events"]) == [3, 3, 3, 3]
    everything = store.windows("p", latest=False)
    assert len(everything) == 6 and int(everything["is_latest"].sum()) == 4


def test_a_run_that_dies_is_marked_failed_not_left_running(tmp_path: Path, monkeypatch) -> None:
    """The store fails in the middle of a run (its second window's write): exit 3, and the
    run's row says `failed` (it used to stay `running` forever)."""
    from recon.errors import StoreError

    config = _pipeline(tmp_path)
    saves = []
    real = ResultStore.save_window

    def flaky(self: ResultStore, result: object, thresholds: object) -> str:
        saves.append(result)
        if len(saves) == 2:
            raise StoreError("results store: connection lost (planted)")
        return real(self, result, thresholds)  # type: ignore[arg-type]

    monkeypatch.setattr(ResultStore, "save_window", flaky)
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T13:00Z") == 3
    store = ResultStore(f"sqlite:///{tmp_path / 'recon-results.sqlite'}")
    with store.engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT status FROM recon_runs").scalars().all()
    assert runs == ["failed"]
    assert len(store.windows("p")) == 1


@pytest.mark.parametrize("name", ["../../etc/evil", "/abs/path", "..", "a/b", "", "x" * 201])
def test_a_pipeline_name_that_would_be_a_path_is_refused(tmp_path: Path, name: str, capsys) -> None:
    """The pipeline name becomes a file name (its suite), a label and a key: `../../x`
    wrote the suite outside expectations/. Now exit 2 naming the key, and nothing written."""
    config = _pipeline(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["pipeline"] = name
    config.write_text(yaml.safe_dump(data))
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T11:00Z") == 2
    assert "pipeline:" in capsys.readouterr().err
    assert not (tmp_path / "expectations").exists()


def test_a_configured_column_name_is_never_spliced_into_sql(tmp_path: Path) -> None:
    """A files stage's `id` crafted to close the query and COPY a file out (it wrote
    pwned.csv through DuckDB): now just a field no line has: every one of the 24 lines
    is unreadable ("no <id>"), the run is a breach, and no file is written."""
    config = _pipeline(tmp_path)
    pwned = tmp_path / "pwned.csv"
    data = yaml.safe_load(config.read_text())
    data["stages"][0]["id"] = f"""x" FROM raw; COPY (SELECT 1) TO '{pwned}'; --"""
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run.json"
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T14:00Z", "--json", str(out)) == 1
    windows = json.loads(out.read_text())["windows"]
    assert [w["stages"][0]["unreadable"] for w in windows] == [6, 6, 6, 6]
    assert [w["events"] for w in windows] == [0, 0, 0, 0]
    assert not pwned.exists()


def test_a_killed_run_reads_abandoned_and_the_next_run_marks_it(tmp_path: Path) -> None:
    """recon SIGKILLed while it stores (no chance to say anything): its run stays `running`
    in the table, but reads `abandoned` once its heartbeat is an hour old, and the next
    run of the pipeline marks it so. (Before, it stayed `running` forever.)"""
    import signal
    import subprocess
    import sys

    from recon.store import results

    config = _pipeline(tmp_path)
    url = f"sqlite:///{tmp_path / 'recon-results.sqlite'}"
    child = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, signal\n"
            "from recon.store import ResultStore\n"
            "real = ResultStore.save_window\n"
            "def dying(self, result, thresholds):\n"
            "    real(self, result, thresholds)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "ResultStore.save_window = dying\n"
            "from recon.cli import main\n"
            f"main(['run', '--config', {str(config)!r}, '--start', '2026-11-20T10:00Z',"
            " '--end', '2026-11-20T13:00Z', '--now', '2026-11-21T00:00Z'])\n"
        )],
    )  # fmt: skip
    assert child.wait(120) == -signal.SIGKILL
    store = ResultStore(url)
    (killed,) = store.runs("p")[["run_id", "status"]].itertuples(index=False)
    assert killed.status == "running"  # its heartbeat is fresh: it may still be alive
    assert len(store.windows("p")) == 1  # the window it stored before it died, whole
    with store.engine.begin() as conn:  # an hour passes
        conn.exec_driver_sql("UPDATE recon_runs SET heartbeat_at = '2000-01-01 00:00:00'")
    assert store.runs("p")["status"].tolist() == ["abandoned"]
    assert timedelta(hours=1) == results.ABANDONED_AFTER
    assert _run(config, "2026-11-20T10:00Z", "2026-11-20T13:00Z") == 0
    runs = store.runs("p")
    assert runs["status"].tolist() == ["ok", "abandoned"]
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT status FROM recon_runs WHERE run_id = ?", (killed.run_id,)
        ).scalar_one()
    assert stored == "abandoned"
