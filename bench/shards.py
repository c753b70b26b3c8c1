"""One big window reconciled whole, then as 4 shards on 2 worker processes, then merged.

    python bench/shards.py [--events N] [--shards K] [--workers W]

Plants one hour of N events (every fault of the incident scenario) into the real
servers (not timed), then times, each in fresh processes:
  1. the window reconciled whole, in one process (what one mapped task does);
  2. K shard tasks (`reconcile_shard` + writing the partial) on W processes at a
     time, as K mapped Airflow tasks on W worker slots, and the merge of their
     partials. The merged window must equal the whole one counter for counter.
Reports wall seconds and each process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from recon.config import PipelineConfig, load_config
from recon.engine import shards
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.engine.reconcile import Engine
from recon.model import Shard, Window, WindowResult
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan

START = datetime(2026, 11, 3, 10, tzinfo=UTC)
WINDOW = Window(START, START + timedelta(hours=1))
NOW = START + timedelta(days=1)
PG = "postgresql+psycopg://recon@127.0.0.1:5432/recon"


def _rss_mib() -> float:
    # VmHWM: this process's own peak (ru_maxrss survives exec: a spawned child reports its
    # parent's if that was higher).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _whole(config: str) -> tuple[WindowResult, float, float]:
    started = time.perf_counter()
    cfg = load_config(config)
    (result,) = Engine(cfg, NOW).reconcile([Span([WINDOW])], Phases())
    return result, time.perf_counter() - started, _rss_mib()


def _shard(config: str, k: int, count: int, root: str) -> tuple[str, float, float]:
    started = time.perf_counter()
    cfg = load_config(config)
    shard = Shard(k, count)
    partial = shards.reconcile_shard(cfg, WINDOW, shard, NOW)
    path = shards.save(partial, shards.partial_dir(root, cfg.pipeline, WINDOW, shard))
    return path, time.perf_counter() - started, _rss_mib()


def _merge(cfg: PipelineConfig, paths: list[str]) -> WindowResult:
    return shards.merge(cfg, [shards.load(p) for p in paths])


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--events", type=int, default=400_000)
    args.add_argument("--shards", type=int, default=4)
    args.add_argument("--workers", type=int, default=2)
    opts = args.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recon-bench-shards-"))
    targets = Targets(PG, "127.0.0.1:9092", work / "lake", f"b{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    plant(
        plan(
            Scenario(
                start=START,
                hours=1,
                events_per_hour=opts.events,
                partitions=6,
                seed=11,
                kafka_loss=0.0001,
                lake_loss=0.3,
                dead_letters_per_hour=50,
                webhook_retries=0.002,
                producer_duplicates=0.001,
                lake_duplicates=0.0005,
                late_per_hour=30,
                orphans_per_hour=10,
            )
        ),
        targets,
    )
    print(f"planted {opts.events:,} events in {time.perf_counter() - t0:.0f} s (not timed)")
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets)))
    cfg = load_config(config)

    # Spawned, not forked: each process's peak RSS is its own, not the planter's.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, spawn, max_tasks_per_child=1) as pool:
        whole, whole_s, whole_rss = pool.submit(_whole, str(config)).result()
    print(f"whole:    {whole_s:6.2f} s wall, peak RSS {whole_rss:,.0f} MiB (1 process)")

    started = time.perf_counter()
    root = str(work / "partials")
    with ProcessPoolExecutor(opts.workers, spawn, max_tasks_per_child=1) as pool:
        done = list(
            pool.map(
                _shard,
                [str(config)] * opts.shards,
                range(opts.shards),
                [opts.shards] * opts.shards,
                [root] * opts.shards,
            )
        )
    shards_s = time.perf_counter() - started
    t1 = time.perf_counter()
    merged = _merge(cfg, [path for path, _, _ in done])
    merge_s = time.perf_counter() - t1
    for k, (_, s, rss) in enumerate(done):
        print(f"  shard {k}: {s:6.2f} s, peak RSS {rss:,.0f} MiB")
    print(
        f"sharded:  {shards_s + merge_s:6.2f} s wall ({opts.shards} shards on {opts.workers} "
        f"processes {shards_s:.2f} s + merge {merge_s:.2f} s), "
        f"peak RSS per shard {max(r for _, _, r in done):,.0f} MiB"
    )
    same = [asdict(m) for m in merged.stages] == [asdict(m) for m in whole.stages]
    same = same and merged.missing.equals(whole.missing) and merged.notes == whole.notes
    if not same:
        raise SystemExit("the merged window differs from the whole one")
    print(
        f"merged == whole, counter for counter: {whole.events:,} events, "
        f"{whole.end_to_end.lost if whole.end_to_end else 0:,} lost"
    )


if __name__ == "__main__":
    main()
