"""recon as users get it: a wheel installed into a fresh virtualenv, run outside the repo.

The editable install the other tests use reads recon/ from the source tree, so a file
recon needs at run time but the wheel lacks (the store's SQL migrations were one:
`recon run` crashed with FileNotFoundError .../recon/store/sql) passes every other test.

Fast: the wheel goes in with --no-deps, and the fresh venv sees the dependencies through
a .pth line naming this venv's site-packages. A plain path line does not run the .pth
files in that directory, so the editable install's hook is not run and the repo's recon
is not importable there: the test checks that recon is imported from the fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 20, 10, tzinfo=UTC)
# e1-e5 received in [10:00, 11:00); the lake got e1-e3. e9 is the next window's.
RECEIVED = {f"e{i}": START + timedelta(minutes=10 * i) for i in range(1, 6)}
RECEIVED["e9"] = START + timedelta(hours=1, minutes=5)
LANDED = ["e1", "e2", "e3", "e9"]


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _runtime_files() -> set[str]:
    """Every file under recon/ in the source tree but bytecode: what the wheel must hold."""
    return {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "recon").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the wheel built from this working tree; its env for subprocesses."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: a build in the repo would leave build/ and egg-info behind in a
    # checkout others work in. The top-level files are what pyproject.toml may name.
    source = root / "src"
    shutil.copytree(
        REPO / "recon", source / "recon", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for top in REPO.iterdir():
        if top.is_file():
            shutil.copy2(top, source / top.name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _ok(_run([*pip, "wheel", "--no-deps", "-q", "-w", root / "dist", source], root, {**os.environ}))
    (wheel,) = (root / "dist").glob("recon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {n for n in archive.namelist() if n.startswith("recon/")}
    assert _runtime_files() - packed == set(), "files under recon/ that the wheel lacks"

    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], root, {**os.environ}))
    python = venv / "bin" / "python"
    _ok(_run([*pip, "--python", python, "install", "--no-deps", "-q", wheel], root, {**os.environ}))
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_ok(_run([python, "-c", code], root, {**os.environ})).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_recon_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONNOUSERSITE": "1"}
    return venv, env


def _pipeline(work: Path) -> Path:
    """A JSON-lines origin and a parquet lake under `work`; results in a new SQLite file."""
    (work / "gateway").mkdir()
    (work / "gateway" / "a.jsonl").write_text(
        "".join(
            json.dumps({"event_id": e, "received_at": t.isoformat()}) + "\n"
            for e, t in RECEIVED.items()
        )
    )
    (work / "lake").mkdir()
    pq.write_table(
        pa.table(
            {
                "event_id": LANDED,
                "ingested_at": pa.array(
                    [RECEIVED[e] + timedelta(seconds=30) for e in LANDED],
                    pa.timestamp("us", "UTC"),
                ),
            }
        ),
        work / "lake" / "part-0.parquet",
    )
    config = work / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "wheel",
                "window": {"size": "1h"},
                "results": str(work / "results.sqlite"),
                "stages": [
                    {"name": "gateway", "source": "files", "path": str(work / "gateway/*.jsonl")},
                    {"name": "lake", "source": "parquet", "path": str(work / "lake")},
                ],
            }
        )
    )
    return config


def test_the_installed_wheel_runs(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """From outside the repo: recon comes from the fresh venv; `recon --version` prints the
    packaged version; `recon db upgrade` creates a fresh SQLite store at the latest schema
    version; `recon run` over [10:00, 11:00) finds 2 of 5 lost (exit 1, the breach) and
    stores the window with exactly e4 and e5 missing."""
    venv, env = installed
    work = tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(REPO)

    where = _run(
        [venv / "bin/python", "-c", "import recon.store.results as r; print(r.__file__)"],
        work,
        env,
    )
    assert Path(_ok(where).strip()).resolve().is_relative_to(venv.resolve())

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _ok(_run(["recon", "--version"], work, env)) == f"recon {version}\n"
    shown = _run([venv / "bin/python", "-c", "import recon; print(recon.__version__)"], work, env)
    assert _ok(shown).strip() == version  # what each stored run records as recon_version

    config = _pipeline(work)
    latest = max(int(p.name[:4]) for p in (REPO / "recon/store/sql").glob("[0-9]*.sql"))
    upgraded = _run(["recon", "db", "upgrade", "--config", config], work, env)
    assert _ok(upgraded) == f"results store at schema version {latest}\n"

    report = work / "run.json"
    judged = (START + timedelta(days=1)).isoformat()  # settled, whatever today's date is
    window = ["--start", START.isoformat(), "--end", (START + timedelta(hours=1)).isoformat()]
    ran = _run(
        ["recon", "run", "--config", config, *window, "--json", report, "--now", judged],
        work,
        env,
    )
    assert ran.returncode == 1, f"{ran.stdout}\n{ran.stderr}"
    (result,) = json.loads(report.read_text())["windows"]
    assert (result["status"], result["events"]) == ("breach", 5)
    keys = ("upstream", "arrived", "lost", "dead_lettered", "pending", "orphans")
    counts = {s["stage"]: [s[k] for k in keys] for s in [*result["stages"], result["end_to_end"]]}
    assert counts == {
        "gateway": [5, 5, 0, 0, 0, 0],
        "lake": [5, 3, 2, 0, 0, 0],
        "end_to_end": [5, 3, 2, 0, 0, 0],
    }

    with sqlite3.connect(work / "results.sqlite") as db:
        assert db.execute("SELECT max(version) FROM recon_schema_version").fetchone() == (latest,)
        windows = db.execute("SELECT window_id, status FROM recon_windows").fetchall()
        assert windows == [(result["window_id"], "breach")]
        missing = db.execute("SELECT event_id, stage, outcome FROM recon_missing_events")
        assert sorted(missing) == [("e4", "lake", "lost"), ("e5", "lake", "lost")]
