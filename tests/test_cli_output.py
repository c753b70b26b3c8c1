"""What `recon run` prints: tables, progress, a summary; logs as text or JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def _pipeline(tmp_path: Path) -> Path:
    """3 hours of 10 receipts each; the lake lost e13 (hour 1) and nothing else."""
    times = [DAY + timedelta(hours=h, minutes=5 * i) for h in range(3) for i in range(10)]
    ids = [f"e{i}" for i in range(30)]
    gw = tmp_path / "gw"
    gw.mkdir()
    (gw / "a.jsonl").write_text(
        "".join(
            json.dumps({"event_id": e, "received_at": t.isoformat()}) + "\n"
            for e, t in zip(ids, times, strict=True)
        )
    )
    lake = tmp_path / "lake" / "dt=2026-11-20"
    lake.mkdir(parents=True)
    kept = [(e, t + timedelta(seconds=3)) for e, t in zip(ids, times, strict=True) if e != "e13"]
    pq.write_table(
        pa.table(
            {
                "event_id": [e for e, _ in kept],
                "ingested_at": pa.array([t for _, t in kept], pa.timestamp("us", tz="UTC")),
            }
        ),
        lake / "part-0.parquet",
    )
    config = tmp_path / "p.yaml"
    stages = [
        {"name": "gateway", "source": "files", "path": str(gw / "*.jsonl")},
        {"name": "lake", "source": "parquet", "path": str(tmp_path / "lake")},
    ]
    config.write_text(yaml.safe_dump({"pipeline": "p", "stages": stages}))
    return config


def _recon(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recon.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


RANGE = ["--start", "2026-11-20T00:00Z", "--end", "2026-11-20T03:00Z", "--now", "2026-11-21T00:00Z"]


def test_json_logs_a_line_per_window_and_the_run_ends_with_a_summary(tmp_path: Path) -> None:
    """Without a terminal: one JSON log line per stored window (pipeline, window, run ID,
    status) on stderr; stdout has the tables, then the summary: 3 windows, 2 ok and 1
    breach, the worst hop (the lake lost 1 of 10 in hour 1), where the results went."""
    config = _pipeline(tmp_path)
    done = _recon("--log-format", "json", "run", "--config", str(config), *RANGE)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    windows = [line for line in lines if line["logger"] == "recon.run"]
    assert [(w["pipeline"], w["window"], w["status"]) for w in windows] == [
        ("p", f"[2026-11-20T0{h}:00:00Z, 2026-11-20T0{h + 1}:00:00Z)", status)
        for h, status in enumerate(["ok", "breach", "ok"])
    ]
    assert len({w["run_id"] for w in windows}) == 1
    summary = done.stdout.split("\n\n")[-1].splitlines()
    assert summary[0].startswith("3 windows in ")
    assert summary[0].endswith(": 2 ok, 1 breach, 0 incomplete, 0 error")
    assert summary[1] == (
        "worst: lake in [2026-11-20T01:00:00Z, 2026-11-20T02:00:00Z) lost 1 of 10 (10.0000%); "
        "1 events lost in all"
    )
    assert summary[2] == (
        f"results: sqlite:///{tmp_path / 'recon-results.sqlite'} (run {windows[0]['run_id']})"
    )


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    config = _pipeline(tmp_path)
    done = _recon("run", "--config", str(config), *RANGE, "--quiet")
    run_id = done.stdout.splitlines()[2].rsplit("(run ", 1)[1].rstrip(")")
    assert done.returncode == 1
    assert done.stderr == ""
    assert done.stdout.splitlines()[1:] == [
        "worst: lake in [2026-11-20T01:00:00Z, 2026-11-20T02:00:00Z) lost 1 of 10 (10.0000%); "
        "1 events lost in all",
        f"results: sqlite:///{tmp_path / 'recon-results.sqlite'} "
        + done.stdout.splitlines()[2].split(" ", 2)[2],
        f"Great Expectations Data Docs: {tmp_path}/data-docs/{run_id}/index.html",
    ]


def test_a_terminal_shows_progress(tmp_path: Path) -> None:
    """stderr on a terminal: a progress bar that reaches 3/3 windows with events/s."""
    config = _pipeline(tmp_path)
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "recon.cli", "run", "--config", str(config), *RANGE],
            stdout=subprocess.PIPE,
            stderr=follower,
            check=False,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 1
    text = seen.decode(errors="replace")
    assert "3/3" in text and "events/s" in text and "window" in text
