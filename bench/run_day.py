"""`recon run` over one planted day: wall time, memory, phases, the read floor, pandas by hand.

    .venv/bin/python bench/run_day.py --events 12000000 --jobs 2 --record bench/RESULTS.md

Plants a day (24 hourly windows) of the incident-like scenario into the real
servers, an hour at a time (not timed): receipts table in PostgreSQL, a
6-partition Kafka topic, the parquet lake, a dead-letter topic. Then, in order:

1. `recon run` over the day as a child process: wall time, peak RSS of its
   whole process tree (sampled from /proc) and of its largest process (GNU
   time), seconds per phase (`--timings`). Every counter of every window is
   compared with the simulator's truth: a fast wrong answer fails the run.
2. The read floor (`floor.py`): each ledger's IDs read alone with plain code.
3. Unless `--no-hand`: the receipts-vs-lake comparison written by hand, as a
   skilled engineer would (ADBC + pyarrow + DuckDB, `skilled.py`) and in pandas
   (`by_hand.py`), and `recon run` on the same two-stage pipeline storing its
   results, all three checked against the truth.

With `--avro` the topic's values are Avro in Confluent wire format (day.PAYMENT,
registered in the schema registry at $RECON_SCHEMA_REGISTRY), keyed by account:
recon reads the IDs with `id: value:payment.id`, and the floor decodes them
from the values (floor.payment_ids). The day gets its own names (bench_N_avro).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import yaml
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

import by_hand
import floor
import skilled
from day import AVRO_ID, DAY, GRACE, HOURS, DayTruth, plant_day

from recon.model import COUNTERS
from recon.simulate.plant import Targets, pipeline_config

PG_URL = os.environ.get("RECON_PG_URL", "postgresql+psycopg://recon@127.0.0.1:5432/recon")
BOOTSTRAP = os.environ.get("RECON_KAFKA", "127.0.0.1:9092")
REGISTRY = os.environ.get("RECON_SCHEMA_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")
END = DAY + timedelta(hours=HOURS)


def tree_rss_kib(root: int) -> int:
    """Summed RSS of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # the process exited while we looked
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry), int(fields["PPid"])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def fresh_database(pg_url: str, name: str) -> str:
    """An empty database for the results store: earlier runs' rows would slow the writes."""
    with psycopg.connect(floor.libpq_url(pg_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def run_recon(config: Path, jobs: int, work: Path, extra: list[str]) -> dict:
    """`recon run` over the day in a child process; wall, memory and phases."""
    report, timings = work / "report.json", work / "timings.json"
    cmd = [
        "/usr/bin/time",
        "-f",
        "maxrss_kib=%M",
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
        "--timings",
        str(timings),
        "--jobs",
        str(jobs),
        *extra,
    ]
    peak = [0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode not in (0, 1):  # 1: the planted incident breaches, as it should
        sys.exit(f"recon run failed with exit code {proc.returncode}:\n{stderr[-3000:]}")
    largest = int(re.findall(r"maxrss_kib=(\d+)", stderr)[-1])
    return {
        "exit": proc.returncode,
        "wall_s": wall,
        "tree_peak_mib": peak[0] / 1024,
        "largest_mib": largest / 1024,
        "timings": json.loads(timings.read_text()),
        "windows": json.loads(report.read_text())["windows"],
    }


def time_check(config: Path) -> float:
    """Wall time of `recon check` over the day (counts only), as a child process."""
    cmd = [sys.executable, "-m", "recon.cli", "check", "--config", str(config)]
    started = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--end", END.isoformat(), "--hours", str(HOURS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        sys.exit(f"recon check failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def check_truth(windows: list[dict], truth: DayTruth, stages: set[str] | None = None) -> None:
    """Every counter of every window must equal the planted truth."""
    if len(windows) != HOURS:
        sys.exit(f"WRONG: {len(windows)} windows, expected {HOURS}")
    for w, (got, want) in enumerate(zip(windows, truth.windows, strict=True)):
        for stage in got["stages"]:
            name = stage["stage"]
            if stages is not None and name not in stages:
                continue
            expected = {k: v for k, v in want[name].items() if k in COUNTERS}
            actual = {k: stage[k] for k in expected}
            if actual != expected:
                sys.exit(f"WRONG window {w} ({got['start']}) {name}: {actual} != {expected}")


def measure_floor(t: Targets, truth: DayTruth, avro: bool) -> dict[str, float]:
    """Seconds per source for the plain reads; the counts must be the planted rows.

    Each read covers everything planted for the day (an hour either side holds
    the few rows stamped after midnight), slightly less than recon reads.
    """
    lo, hi = DAY - timedelta(hours=1), END + timedelta(hours=1)
    # With Avro values the key is the account: the IDs must be decoded from the values.
    pick, decode = (floor.Message.value, floor.payment_ids) if avro else (floor.Message.key, None)
    reads = {
        "receipts (ADBC)": lambda: floor.receipts_adbc(t.pg_url, t.receipts_table, lo, hi),
        "receipts (COPY csv)": lambda: floor.receipts_copy(t.pg_url, t.receipts_table, lo, hi),
        "lake": lambda: floor.lake(t.lake_path, lo, hi),
        "kafka": lambda: floor.topic(t.bootstrap, t.topic, lo, hi, pick, decode),
        "dead letters": lambda: floor.topic(
            t.bootstrap, t.dead_letter_topic, lo, hi, floor.dead_letter_id
        ),
    }
    planted = {
        "receipts (ADBC)": truth.ledger_rows["receipts"],
        "receipts (COPY csv)": truth.ledger_rows["receipts"],
        "lake": truth.ledger_rows["lake"],
        "kafka": truth.ledger_rows["kafka"],
        "dead letters": truth.ledger_rows["dead_letters"],
    }
    seconds = {}
    for name, read in reads.items():
        took, rows = floor.timed(read)
        if rows != planted[name]:
            sys.exit(f"floor read {name}: {rows:,} rows, planted {planted[name]:,}")
        seconds[name] = took
        print(f"  floor {name:20s} {rows:>12,d} IDs {took:7.2f} s", flush=True)
    return seconds


def hand_comparison(t: Targets, truth: DayTruth, work: Path, jobs: int) -> dict:
    """The skilled script, pandas by hand and recon on receipts vs lake; all vs the truth."""
    want = {w: truth.not_in_lake(w) for w in range(HOURS)}
    started = time.perf_counter()
    by_hour = skilled.missing_per_hour(
        t.pg_url, t.receipts_table, t.lake_path, DAY, END, GRACE, work / "missing.parquet"
    )
    skilled_s = time.perf_counter() - started
    got = {w: by_hour.get(w, 0) for w in range(HOURS)}
    if got != want:
        sys.exit(f"WRONG skilled script: {got} != {want}")
    started = time.perf_counter()
    by_hour = by_hand.missing_per_hour(t.pg_url, t.receipts_table, t.lake_path, DAY, END, GRACE)
    pandas_s = time.perf_counter() - started
    got = {w: by_hour.get(w, 0) for w in range(HOURS)}
    if got != want:
        sys.exit(f"WRONG pandas by hand: {got} != {want}")
    cfg = pipeline_config(t, results=fresh_database(PG_URL, "recon_bench_two"))
    cfg["pipeline"] = f"{t.name}-receipts-vs-lake"
    cfg["stages"] = [cfg["stages"][0], cfg["stages"][2]]
    cfg["dead_letters"] = []
    config = work / "two-stage.yaml"
    config.write_text(yaml.safe_dump(cfg))
    two = run_recon(config, jobs, work, [])
    recon_missing = {
        w: window["end_to_end"]["upstream"] - window["end_to_end"]["arrived"]
        for w, window in enumerate(two["windows"])
    }
    if recon_missing != want:
        sys.exit(f"WRONG recon two-stage: {recon_missing} != {want}")
    return {
        "skilled_s": skilled_s,
        "pandas_s": pandas_s,
        "recon": two,
        "missing": sum(want.values()),
    }


def machine() -> str:
    """One line of machine facts."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the day")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--no-hand", action="store_true", help="skip the pandas comparison")
    parser.add_argument("--no-floor", action="store_true", help="skip the read floor")
    parser.add_argument("--record", type=Path, help="write this run's section into this file")
    parser.add_argument(
        "--results",
        help="results store of the timed run (default: a fresh PostgreSQL database, recon_bench)",
    )
    parser.add_argument("--reuse", type=Path, help="a previous run's directory: do not re-plant")
    parser.add_argument(
        "--avro", action="store_true", help="Avro values keyed by account (reuse: planted so)"
    )
    args = parser.parse_args()

    work = args.reuse or Path(tempfile.mkdtemp(prefix="recon-bench-"))
    name = f"bench_{args.events}" + ("_avro" if args.avro else "")
    t = Targets(PG_URL, BOOTSTRAP, work / "lake", name)
    if args.reuse:
        truth = DayTruth(**json.loads((work / "truth.json").read_text()))
    else:
        print(f"planting {args.events:,} events into {t.name} ({work}) ...", flush=True)
        started = time.perf_counter()
        truth = plant_day(args.events, t, REGISTRY if args.avro else None)
        print(f"planted {truth.ledger_rows} in {time.perf_counter() - started:.0f} s", flush=True)
        (work / "truth.json").write_text(json.dumps(dataclasses.asdict(truth)))
    config = work / "pipeline.yaml"
    results = args.results or fresh_database(PG_URL, "recon_bench")
    cfg = pipeline_config(t, results=results)
    if args.avro:
        kafka = next(stage for stage in cfg["stages"] if stage["name"] == "kafka")
        kafka.update(id=AVRO_ID, schema_registry={"url": REGISTRY})
    config.write_text(yaml.safe_dump(cfg))

    full = run_recon(config, args.jobs, work, [])
    check_truth(full["windows"], truth)
    print(
        f"recon run: {full['wall_s']:.1f} s wall, peak RSS {full['tree_peak_mib']:,.0f} MiB "
        f"(process tree), {full['largest_mib']:,.0f} MiB (largest process), exit {full['exit']}; "
        f"all {HOURS} windows equal the truth",
        flush=True,
    )
    for phase, seconds in full["timings"]["phases"].items():
        print(f"  phase {phase:24s} {seconds:8.2f} s")
    result = {
        "events": args.events,
        "jobs": args.jobs,
        "avro": args.avro,
        "truth": truth,
        "full": full,
    }
    result["check_s"] = time_check(config)
    print(f"recon check (counts only, 24 h): {result['check_s']:.2f} s wall")
    if not args.no_floor:
        seconds = measure_floor(t, truth, args.avro)
        receipts = min(seconds.pop("receipts (ADBC)"), seconds.pop("receipts (COPY csv)"))
        result["floor"] = {"receipts": receipts, **seconds}
        total = sum(result["floor"].values())
        print(f"read floor {total:.1f} s; recon run / floor = {full['wall_s'] / total:.2f}")
    if not args.no_hand:
        hand = hand_comparison(t, truth, work, args.jobs)
        result["hand"] = hand
        print(
            f"receipts vs lake ({hand['missing']:,} missing): skilled script "
            f"{hand['skilled_s']:.1f} s, pandas by hand {hand['pandas_s']:.1f} s, recon (stored) "
            f"{hand['recon']['wall_s']:.1f} s -> recon / skilled "
            f"{hand['recon']['wall_s'] / hand['skilled_s']:.2f}, same numbers"
        )
    if args.record:
        record(args.record, result, " ".join(sys.argv[1:]))
    return 0


def record(path: Path, r: dict, argv: str) -> None:
    """Replace (or add) this size's section of the results file."""
    full, truth = r["full"], r["truth"]
    values = ", Avro values" if r["avro"] else ""
    heading = f"## {r['events']:,} events/day{values}, --jobs {r['jobs']}"
    lines = [
        heading,
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {machine()}.",
        "",
        "```",
        f".venv/bin/python bench/run_day.py {argv}",
        "```",
        "",
        f"Planted rows: {', '.join(f'{k} {v:,}' for k, v in truth.ledger_rows.items())}; "
        f"{truth.events:,} cohort events. All {HOURS} windows equal the simulator's truth.",
        "",
    ]
    if r["avro"]:
        lines += [
            "Kafka values are Avro in Confluent wire format (`bench/day.py` PAYMENT, ~45 bytes, "
            "the ID in a nested record after a string field), keyed by account; recon reads "
            f"`id: {AVRO_ID}` through the schema registry. The floor's Kafka read decodes "
            "`payment.id` from each value with numpy, knowing the layout (`floor.payment_ids`).",
            "",
        ]
    lines += [
        "| measure | value |",
        "| --- | --- |",
        f"| `recon run` wall | {full['wall_s']:.1f} s |",
        f"| peak RSS, whole process tree (sampled) | {full['tree_peak_mib']:,.0f} MiB |",
        f"| peak RSS, largest process (GNU time) | {full['largest_mib']:,.0f} MiB |",
        f"| `recon check --hours 24` (counts only) | {r['check_s']:.2f} s |",
    ]
    if "floor" in r:
        total = sum(r["floor"].values())
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in r["floor"].items())
        lines.append(f"| read floor (sequential, {parts}) | {total:.1f} s |")
        lines.append(f"| recon run / read floor | {full['wall_s'] / total:.2f} |")
    if "hand" in r:
        hand = r["hand"]
        recon_s = hand["recon"]["wall_s"]
        lines += [
            f"| receipts vs lake, skilled script (ADBC + pyarrow + DuckDB) | "
            f"{hand['skilled_s']:.1f} s |",
            f"| receipts vs lake, pandas by hand | {hand['pandas_s']:.1f} s |",
            f"| receipts vs lake, `recon run` storing its results (same numbers) | "
            f"{recon_s:.1f} s |",
            f"| recon / skilled script | {recon_s / hand['skilled_s']:.2f} |",
        ]
    lines += ["", "Seconds per phase (summed over threads and worker processes):", ""]
    lines += ["| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in full["timings"]["phases"].items()]
    section = "\n".join(lines) + "\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in text:
        before, rest = text.split(heading, 1)
        after = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
