"""The exact numbers a planted scenario must produce, derived from the plan's fates.

This is deliberately written from the simulator's own bookkeeping (who was
dropped where, which rows were written), not by re-running the engine's joins,
so the two can check each other. Rows are mapped to their event once, by
index, so the truth of a 12 M-event day takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recon.model import Window
from recon.simulate.scenario import DEAD_LETTERED, DELIVERED, LOST_KAFKA, LOST_LAKE, PENDING, Plan
from recon.timeutil import epoch_us

_NEVER = np.iinfo(np.int64).max


@dataclass
class WindowTruth:
    """Expected counters per stage (origin first) and the missing IDs per (stage, outcome)."""

    window: Window
    events: int
    stages: dict[str, dict[str, int]]
    missing: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    max_latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Rows:
    """One ledger's rows as (event index, time in µs)."""

    event: np.ndarray
    us: np.ndarray

    @classmethod
    def of(cls, p: Plan, table: pa.Table, us: pa.ChunkedArray) -> _Rows:
        index = pc.index_in(table["event_id"], value_set=p.events["event_id"])
        return cls(
            index.to_numpy(zero_copy_only=False).astype(np.int64),
            pc.cast(us, pa.int64()).to_numpy(),
        )

    def in_range(self, lo: int, hi: int) -> np.ndarray:
        return (self.us >= lo) & (self.us < hi)


@dataclass
class _Prepared:
    p: Plan
    ids: np.ndarray
    origin: np.ndarray
    fate: np.ndarray
    orphan: np.ndarray
    receipts: _Rows
    kafka: _Rows
    lake: _Rows


def _prepare(p: Plan) -> _Prepared:
    ev = p.events
    return _Prepared(
        p,
        ev["event_id"].to_numpy(zero_copy_only=False),
        ev["origin_us"].to_numpy(),
        ev["fate"].to_numpy(),
        ev["orphan"].to_numpy(zero_copy_only=False),
        _Rows.of(p, p.receipts, p.receipts["received_at"]),
        _Rows.of(p, p.kafka, pc.multiply(p.kafka["ts_ms"], 1000)),
        _Rows.of(p, p.lake, p.lake["ingested_at"]),
    )


def _downstream(
    d: _Prepared,
    rows: _Rows,
    cohort: np.ndarray,
    arrived: np.ndarray,
    window: tuple[int, int],
    search: tuple[int, int],
) -> tuple[dict[str, int], float]:
    start, end = window
    take = rows.in_range(*search) & cohort[rows.event]
    event, us = rows.event[take], rows.us[take]
    first = np.full(len(d.ids), _NEVER, dtype=np.int64)
    np.minimum.at(first, event, us)
    distinct = int((first != _NEVER).sum())
    orphan_rows = rows.in_range(start, end) & d.orphan[rows.event]
    seen = arrived & (first != _NEVER)
    latency = first[seen] - d.origin[seen]
    return {
        "duplicates": int(take.sum()) - distinct,
        "late": int((first[seen] >= end).sum()),
        "orphans": int(np.unique(rows.event[orphan_rows]).size),
    }, float(latency.max()) / 1000 if latency.size else 0.0


def window_truth(d: _Prepared, window: Window, grace: timedelta, skew: timedelta) -> WindowTruth:
    """What reconciling `window` must report, for a pipeline webhook -> kafka -> lake."""
    start, end = epoch_us(window.start), epoch_us(window.end)
    search = (start - int(skew.total_seconds() * 1e6), end + int(grace.total_seconds() * 1e6))
    fate = d.fate
    cohort = (~d.orphan) & (d.origin >= start) & (d.origin < end)
    n = int(cohort.sum())

    receipts_in_w = d.receipts.in_range(start, end)
    origin_dups = int(receipts_in_w.sum()) - int(np.unique(d.receipts.event[receipts_in_w]).size)
    k_extra, k_lat = _downstream(d, d.kafka, cohort, fate != LOST_KAFKA, (start, end), search)
    l_extra, l_lat = _downstream(d, d.lake, cohort, fate == DELIVERED, (start, end), search)

    def count(mask: np.ndarray) -> int:
        return int((mask & cohort).sum())

    kafka_arrived = count(fate != LOST_KAFKA)
    zero = dict.fromkeys(("lost", "dead_lettered", "pending", "unverifiable", "late"), 0)
    stages = {
        "webhook": {"upstream": n, "arrived": n, **zero, "duplicates": origin_dups, "orphans": 0},
        "kafka": {
            **zero,
            "upstream": n,
            "arrived": kafka_arrived,
            "lost": count(fate == LOST_KAFKA),
            **k_extra,
        },
        "lake": {
            **zero,
            "upstream": kafka_arrived,
            "arrived": count(fate == DELIVERED),
            "lost": count(fate == LOST_LAKE),
            "dead_lettered": count(fate == DEAD_LETTERED),
            "pending": count(fate == PENDING),
            **l_extra,
        },
    }
    missing = {
        ("kafka", "lost"): set(d.ids[cohort & (fate == LOST_KAFKA)]),
        ("lake", "lost"): set(d.ids[cohort & (fate == LOST_LAKE)]),
        ("lake", "dead_lettered"): set(d.ids[cohort & (fate == DEAD_LETTERED)]),
        ("lake", "pending"): set(d.ids[cohort & (fate == PENDING)]),
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
    prepared = _prepare(p)
    span = Window(start or p.scenario.start, end or p.scenario.end)
    return [window_truth(prepared, w, grace, skew) for w in span.split(size)]
