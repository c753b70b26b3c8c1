"""`recon run` over one simulated day: wall time and peak memory, checked against the truth.

    .venv/bin/python bench/run_day.py --events 1000000 [--jobs 2]

Plants a day (24 hourly windows) of the incident-like scenario into the real
servers (not timed), then runs `recon run` as a child process and reports its
wall time and peak RSS. Every window's counters are checked against the
simulator's ground truth: a fast wrong answer fails the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth

PG_URL = os.environ.get("RECON_PG_URL", "postgresql+psycopg://recon@127.0.0.1:5432/recon")
BOOTSTRAP = os.environ.get("RECON_KAFKA", "127.0.0.1:9092")
DAY = datetime(2026, 11, 2, tzinfo=UTC)


def scenario(events: int) -> Scenario:
    """A day with every fault planted, including 30 % lake loss from 02:00 to 10:00."""
    return Scenario(
        start=DAY,
        hours=24,
        events_per_hour=events // 24,
        partitions=6,
        seed=5,
        kafka_loss=0.00004,
        lake_loss=lambda h: 0.302 if 2 <= h < 10 else 0.0,
        dead_letters_per_hour=5,
        webhook_retries=0.002,
        producer_duplicates=0.001,
        lake_duplicates=0.0005,
        late_per_hour=3,
        orphans_per_hour=1,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--skip-truth", action="store_true")
    parser.add_argument(
        "--results",
        default=PG_URL,
        help="results store URL (default: the PostgreSQL of the services)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recon-bench-"))
    s = scenario(args.events)
    p = plan(s)
    targets = Targets(PG_URL, BOOTSTRAP, work / "lake", f"bench_day_{args.events}")
    t = time.perf_counter()
    plant(p, targets)
    print(f"planted {p.events.num_rows:,} events in {time.perf_counter() - t:.0f} s ({work})")
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, results=args.results)))
    report = work / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "recon.cli",
        "run",
        "--config",
        str(config),
        "--start",
        s.start.isoformat(),
        "--end",
        s.end.isoformat(),
        "--json",
        str(report),
        "--jobs",
        str(args.jobs),
    ]
    # GNU time reports the largest RSS in recon's process tree (pool workers included);
    # measuring from here would count this process's planted data, inherited at fork.
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kib=%M", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    code = proc.returncode
    peak_mib = int(proc.stderr.rsplit("maxrss_kib=", 1)[1].split()[0]) / 1024
    print(
        f"recon run: exit {code}, {wall:.1f} s wall, peak RSS {peak_mib:,.0f} MiB "
        f"(largest process), jobs={args.jobs}"
    )
    if code not in (0, 1):
        return 1
    if not args.skip_truth:
        windows = json.loads(report.read_text())["windows"]
        want = truth(p, timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))
        for got, w in zip(windows, want, strict=True):
            for stage in got["stages"]:
                expected = w.stages[stage["stage"]]
                actual = {k: stage[k] for k in expected}
                if actual != expected:
                    print(f"WRONG {got['start']} {stage['stage']}: {actual} != {expected}")
                    return 1
        print(f"all {len(windows)} windows equal the simulator's truth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
