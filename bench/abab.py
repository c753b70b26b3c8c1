"""Two revisions of recon, alternated over one planted day: A B A B, in one sitting.

    .venv/bin/python bench/abab.py --day /tmp/recon-bench-XXXX --events 12000000 \\
        --a /tmp/recon-old --b . --rounds 2

`--a` and `--b` are checkouts of recon (e.g. `git worktree add /tmp/recon-old
REV`); each `recon run` is a child process started in its checkout, so it
imports that checkout's `recon`. The day is one `run_day.py` planted (`--day`
is its directory). Per round and revision: the full 4-ledger day and the
receipts -> lake pipeline, each storing into a fresh PostgreSQL database and
checked against the day's truth; and once per round, the skilled script
(`skilled.py`) over the same receipts and lake. Reported: wall time, user and
system CPU of recon's process, its peak RSS (GNU time), and PostgreSQL's CPU
during the run (its backends' /proc counters): the machine's drift shows as
the spread between rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import skilled
from day import DAY, GRACE, HOURS, DayTruth
from run_day import END, PG_URL, check_truth, fresh_database

_TIME = re.compile(r"wall=([\d.]+) rss=(\d+) user=([\d.]+) sys=([\d.]+)")


def postgres_cpu_s() -> float:
    """User + system seconds of every PostgreSQL process on the machine, children included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # the process ended while listed
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def run(checkout: Path, config: Path, report: Path) -> dict[str, float]:
    """`recon run` over the day from `checkout`, storing; its times and memory."""
    cmd = [
        "/usr/bin/time",
        "-f",
        "wall=%e rss=%M user=%U sys=%S",
        sys.executable,
        "-m",
        "recon.cli",
        "run",
        "--config",
        str(config),
        "--start",
        DAY.isoformat(),
        "--end",
        END.isoformat(),
        "--json",
        str(report),
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    pg = postgres_cpu_s()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    pg = postgres_cpu_s() - pg
    if proc.returncode not in (0, 1):
        sys.exit(f"recon run in {checkout} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall, rss, user, system = _TIME.findall(proc.stderr)[-1]
    return {
        "wall": float(wall),
        "rss_mib": int(rss) / 1024,
        "user": float(user),
        "sys": float(system),
        "pg": pg,
    }


def configs(day: Path) -> tuple[Path, Path]:
    """The day's 4-ledger config and its receipts -> lake config, each with a fresh store."""
    full = yaml.safe_load((day / "pipeline.yaml").read_text())
    full["results"] = fresh_database(PG_URL, "recon_abab")
    two = dict(full, results=fresh_database(PG_URL, "recon_abab_two"), dead_letters=[])
    two["pipeline"] = f"{full['pipeline']}-receipts-vs-lake"
    two["stages"] = [full["stages"][0], full["stages"][-1]]
    paths = day / "abab-full.yaml", day / "abab-two.yaml"
    for path, cfg in zip(paths, (full, two), strict=True):
        path.write_text(yaml.safe_dump(cfg))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--day", type=Path, required=True, help="a run_day.py directory")
    parser.add_argument("--events", type=int, required=True, help="the day's size, as planted")
    parser.add_argument("--a", type=Path, required=True, help="checkout of revision A")
    parser.add_argument("--b", type=Path, required=True, help="checkout of revision B")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    truth = DayTruth(**json.loads((args.day / "truth.json").read_text()))
    full = yaml.safe_load((args.day / "pipeline.yaml").read_text())
    table = full["stages"][0]["table"]
    lake = Path(full["stages"][-1]["path"])
    want = {w: truth.not_in_lake(w) for w in range(HOURS)}
    for r in range(args.rounds):
        for name, checkout in (("A", args.a), ("B", args.b)):
            for pipeline, config in zip(("full", "receipts->lake"), configs(args.day), strict=True):
                report = args.day / "abab-report.json"
                got = run(checkout.resolve(), config, report)
                windows = json.loads(report.read_text())["windows"]
                if pipeline == "full":
                    check_truth(windows, truth)
                else:
                    lost = {
                        w: x["end_to_end"]["upstream"] - x["end_to_end"]["arrived"]
                        for w, x in enumerate(windows)
                    }
                    if lost != want:
                        sys.exit(f"WRONG receipts->lake in {checkout}: {lost} != {want}")
                print(
                    f"round {r + 1} {name} {pipeline:15s} {got['wall']:6.1f} s wall, user "
                    f"{got['user']:5.1f} s, sys {got['sys']:5.1f} s, PostgreSQL "
                    f"{got['pg']:5.1f} s, {got['rss_mib']:,.0f} MiB",
                    flush=True,
                )
        pg = postgres_cpu_s()
        started = time.perf_counter()
        by_hour = skilled.missing_per_hour(
            PG_URL, table, lake, DAY, END, GRACE, args.day / "missing.parquet"
        )
        took = time.perf_counter() - started
        if {w: by_hour.get(w, 0) for w in range(HOURS)} != want:
            sys.exit("WRONG skilled script")
        print(
            f"round {r + 1} skilled script   {took:6.1f} s wall, PostgreSQL "
            f"{postgres_cpu_s() - pg:5.1f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
