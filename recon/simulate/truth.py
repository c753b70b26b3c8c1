"""The exact numbers a planted scenario must produce, derived from the plan's fates.

This is deliberately written from the simulator's own bookkeeping (who was
dropped where, which rows were written), not by re-running the engine's joins,
so the two can check each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.model import Window
from recon.simulate.scenario import DEAD_LETTERED, LOST_KAFKA, LOST_LAKE, PENDING, Plan
from recon.timeutil import epoch_us

STAGES = ("webhook", "kafka", "lake")


@dataclass
class WindowTruth:
    """Expected counters per stage (origin first) and the missing IDs per (stage, outcome)."""

    window: Window
    events: int
    stages: dict[str, dict[str, int]]
    missing: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    max_latency_ms: dict[str, float] = field(default_factory=dict)


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table[column].to_numpy(zero_copy_only=False)


def window_truth(p: Plan, window: Window, grace: timedelta, skew: timedelta) -> WindowTruth:
    """What reconciling `window` must report, for a pipeline webhook -> kafka -> lake."""
    start, end = epoch_us(window.start), epoch_us(window.end)
    ev = p.events
    ids = _np(ev, "event_id")
    origin, fate, orphan = _np(ev, "origin_us"), _np(ev, "fate"), _np(ev, "orphan")
    cohort = (~orphan) & (origin >= start) & (origin < end)
    cohort_ids = set(ids[cohort])
    n = int(cohort.sum())

    rec_ids = _np(p.receipts, "event_id")
    rec_t = pc.cast(p.receipts["received_at"], "int64").to_numpy()
    in_w = (rec_t >= start) & (rec_t < end)
    origin_dups = int(in_w.sum()) - len(set(rec_ids[in_w]))

    k_ids, k_us = _np(p.kafka, "event_id"), _np(p.kafka, "ts_ms") * 1000
    l_ids = _np(p.lake, "event_id")
    l_us = pc.cast(p.lake["ingested_at"], "int64").to_numpy()
    lo, hi = start - int(skew.total_seconds() * 1e6), end + int(grace.total_seconds() * 1e6)
    orphan_ids = set(ids[orphan])

    origin_of = pd.Series(origin[cohort], index=ids[cohort])

    def downstream(
        row_ids: np.ndarray, row_us: np.ndarray, arrived_mask: np.ndarray
    ) -> tuple[dict[str, int], float]:
        rows = pd.DataFrame({"id": row_ids, "t": row_us})
        in_range = rows[(rows.t >= lo) & (rows.t < hi) & rows.id.isin(cohort_ids)]
        first = in_range.groupby("id").t.min()
        in_wt = rows[(rows.t >= start) & (rows.t < end) & rows.id.isin(orphan_ids)]
        arrived = ids[arrived_mask & cohort]
        first_arrived = first.reindex(arrived)
        late = int((first_arrived >= end).sum())
        lat = (first_arrived - origin_of.reindex(arrived)).max()
        max_lat = 0.0 if pd.isna(lat) else float(lat) / 1000
        extra = {
            "duplicates": len(in_range) - len(first),
            "late": late,
            "orphans": int(in_wt.id.nunique()),
        }
        return extra, max_lat

    def count(mask: np.ndarray) -> int:
        return int((mask & cohort).sum())

    k_extra, k_lat = downstream(k_ids, k_us, fate != LOST_KAFKA)
    l_extra, l_lat = downstream(l_ids, l_us, fate == 0)
    kafka_up = n
    kafka_arrived = count(fate != LOST_KAFKA)
    lake_arrived = count(fate == 0)
    stages = {
        "webhook": {
            "upstream": n,
            "arrived": n,
            "lost": 0,
            "dead_lettered": 0,
            "pending": 0,
            "unverifiable": 0,
            "late": 0,
            "duplicates": origin_dups,
            "orphans": 0,
        },
        "kafka": {
            "upstream": kafka_up,
            "arrived": kafka_arrived,
            "lost": count(fate == LOST_KAFKA),
            "dead_lettered": 0,
            "pending": 0,
            "unverifiable": 0,
            **k_extra,
        },
        "lake": {
            "upstream": kafka_arrived,
            "arrived": lake_arrived,
            "lost": count(fate == LOST_LAKE),
            "dead_lettered": count(fate == DEAD_LETTERED),
            "pending": count(fate == PENDING),
            "unverifiable": 0,
            **l_extra,
        },
    }
    missing = {
        ("kafka", "lost"): set(ids[cohort & (fate == LOST_KAFKA)]),
        ("lake", "lost"): set(ids[cohort & (fate == LOST_LAKE)]),
        ("lake", "dead_lettered"): set(ids[cohort & (fate == DEAD_LETTERED)]),
        ("lake", "pending"): set(ids[cohort & (fate == PENDING)]),
    }
    return WindowTruth(window, n, stages, missing, {"kafka": k_lat, "lake": l_lat})


def truth(
    p: Plan,
    size: timedelta,
    grace: timedelta,
    skew: timedelta,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[WindowTruth]:
    """Truth for every window of the scenario (or of [start, end))."""
    span = Window(start or p.scenario.start, end or p.scenario.end)
    return [window_truth(p, w, grace, skew) for w in span.split(size)]
