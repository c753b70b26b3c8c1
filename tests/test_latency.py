"""Latency percentiles per window and stage, on planted microsecond latencies.

The percentiles are nearest-rank (the ceil(q * n)-th smallest latency, as
SQL's percentile_disc and DuckDB's quantile_disc give them) over the events
that arrived at the stage, each at its first time there; max is the largest.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta

import duckdb
import pytest

from recon.engine.loss import compute_many
from recon.model import Ranges, StageInput, Window

from .helpers import W, ledger


def _hms(offset: timedelta) -> str:
    return (W.start + offset).strftime("%H:%M:%S.%f")


def _nearest_rank(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1] / 1000.0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 99, 101, 1000])
def test_percentiles_per_window(n: int) -> None:
    """Three 20-minute windows; window j gets n + j events, each seen at Kafka once and
    (for all but every 5th) at the lake twice, the second time later. Latencies are
    random microseconds (seeded), so ties and ordering both matter."""
    rng = random.Random(n)
    windows = Window(W.start, W.start + timedelta(hours=1)).split(timedelta(minutes=20))
    origin, kafka, lake = [], [], []
    want: dict[tuple[int, str], list[int]] = {}
    for j, window in enumerate(windows):
        for e in range(n + j):
            at = (window.start - W.start) + timedelta(seconds=rng.randrange(0, 1100))
            event = f"w{j}-e{e}"
            origin.append((event, _hms(at)))
            to_kafka = rng.randrange(0, 3_000_000)
            kafka.append((event, _hms(at + timedelta(microseconds=to_kafka))))
            want.setdefault((j, "kafka"), []).append(to_kafka)
            if e % 5 == 4:
                continue
            to_lake = to_kafka + rng.randrange(0, 30_000_000)
            lake.append((event, _hms(at + timedelta(microseconds=to_lake + 5_000_000))))
            lake.append((event, _hms(at + timedelta(microseconds=to_lake))))
            want.setdefault((j, "lake"), []).append(to_lake)
    stages = [
        StageInput("webhook", ledger(origin, "receipts")),
        StageInput("kafka", ledger(kafka, "events")),
        StageInput("lake", ledger(lake, "lake")),
    ]
    computed = compute_many(windows, stages, Ranges())
    con = duckdb.connect()
    for j, result in enumerate(computed):
        for stage in result.stages[1:]:
            values = want.get((j, stage.stage), [])
            assert stage.arrived == len(values)
            got = stage.latency_ms
            if not values:
                assert got == {"p50": None, "p95": None, "p99": None, "max": None}
                continue
            (duck,) = con.execute(
                "SELECT quantile_disc(v / 1000.0, [0.5, 0.95, 0.99]) FROM unnest($1) t(v)",
                [values],
            ).fetchone()
            assert [got["p50"], got["p95"], got["p99"]] == duck
            assert got == {
                "p50": _nearest_rank(values, 0.5),
                "p95": _nearest_rank(values, 0.95),
                "p99": _nearest_rank(values, 0.99),
                "max": max(values) / 1000.0,
            }
