"""Reader throughput: plant N rows per source into the real servers, time each reader alone.

    .venv/bin/python bench/readers.py --rows 1000000 --rows 12000000

Planting is not timed. Each reader reads the whole planted day in one call
(24 h of rows), so rows/s is the reader's own throughput. Needs the servers
from `scripts/services.sh up`.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recon.model import Window
from recon.simulate.plant import create_topic, produce_events, write_lake, write_receipts
from recon.sources import kafka, parquet, sql

DAY = datetime(2026, 11, 1, tzinfo=UTC)
PG_URL = os.environ.get("RECON_PG_URL", "postgresql+psycopg://recon@127.0.0.1:5432/recon")
BOOTSTRAP = os.environ.get("RECON_KAFKA", "127.0.0.1:9092")
PARTITIONS = 6


def rows(n: int) -> tuple[pa.Array, np.ndarray]:
    """n event IDs with times spread over one day (microseconds, sorted)."""
    ids = pc.binary_join_element_wise("evt-", pc.cast(pa.array(np.arange(n)), pa.string()), "")
    t0 = int(DAY.timestamp() * 1_000_000)
    times = t0 + np.sort(np.random.default_rng(1).integers(0, 86_400_000_000, n))
    return ids, times


def timed(label: str, n: int, fn) -> dict:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    read = fn()
    seconds = time.perf_counter() - start
    assert read.table.num_rows == n, (label, read.table.num_rows, n)
    print(
        f"  {label:8s} {n:>11,d} rows  {seconds:7.2f} s  {n / seconds:>12,.0f} rows/s", flush=True
    )
    return {"reader": label, "rows": n, "seconds": seconds}


def bench(n: int, workdir: Path) -> list[dict]:
    ids, times_us = rows(n)
    ts = pa.array(times_us, pa.timestamp("us", tz="UTC"))
    name = f"bench{n}"
    print(f"planting {n:,} rows per source ...", flush=True)
    t = time.perf_counter()
    write_receipts(pa.table({"event_id": ids, "received_at": ts}), PG_URL, name)
    write_lake(pa.table({"event_id": ids, "ingested_at": ts}), workdir / name)
    create_topic(BOOTSTRAP, name, PARTITIONS)
    part = (np.arange(n) % PARTITIONS).astype(np.int32)
    order = np.lexsort((times_us, part))
    produce_events(
        pa.table(
            {
                "event_id": ids.take(order),
                "partition": part[order],
                "offset": np.zeros(n, np.int64),
                "ts_ms": times_us[order] // 1000,
            }
        ),
        BOOTSTRAP,
        name,
    )
    print(f"  planted in {time.perf_counter() - t:.0f} s", flush=True)
    day = Window(DAY, DAY + timedelta(days=1))
    return [
        timed(
            "sql",
            n,
            lambda: sql.read(sql.Config(name="w", source="sql", url=PG_URL, table=name), day),
        ),
        timed(
            "parquet",
            n,
            lambda: parquet.read(
                parquet.Config(name="l", source="parquet", path=str(workdir / name)), day
            ),
        ),
        timed(
            "kafka",
            n,
            lambda: kafka.read(
                kafka.Config(name="k", source="kafka", bootstrap=BOOTSTRAP, topic=name), day
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, action="append", default=None)
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows or [1_000_000]:
            bench(n, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
