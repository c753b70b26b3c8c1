"""Where each cohort event was seen, as arrays indexed by the event, and the counts.

DuckDB groups the origin's rows into (window, ID) pairs and matches every
downstream row to its pair; the cohort's pairs are numbered 0..n-1 (`k`).
From there each per-event fact is a slot of a dense array: the first time at
each stage is a `minimum.at`, the in-flight and dead-letter flags a scatter,
and the per-window counters are bincounts. A GROUP BY of the matched rows
with a dozen aggregates, then a join, cost DuckDB ~1.3 s per 2 M-event chunk;
these arrays ~0.2 s. Times are epoch microseconds (int64), exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recon.model import OUTCOMES

NOT_SEEN = np.iinfo(np.int64).max
_DEAD, _PENDING, _UNVERIFIABLE, _LOST = range(4)
# quantile_disc's positions as exact fractions: DuckDB takes the value at
# max(1, ceil(n * q)) - 1 of the sorted values, in integer arithmetic for a DECIMAL q.
QUANTILES = {"p50": (1, 2), "p95": (19, 20), "p99": (99, 100)}


@dataclass
class Cohort:
    """The cohort events, numbered 0..n-1 (`k`), among the origin's (window, ID) pairs.

    DuckDB numbers every (window, ID) pair of the origin's rows 0..N-1 (`p`, the
    rowid of its freshly written `seen` table: a number outside 0..N-1 fails
    the indexing here, it cannot go unnoticed); the cohort's pairs are numbered
    in the order they arrive.
    """

    w: np.ndarray  # int32: the window
    origin_us: np.ndarray  # int64: first origin time (inside the window)
    inflight: np.ndarray  # bool: an origin row at or beyond its group's committed offset
    pair: np.ndarray  # the pair p of cohort event k
    k_of_pair: np.ndarray  # per pair p: its cohort number k, or -1 outside the cohort

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch], n: int, n_pairs: int) -> Cohort:
        """From batches of columns p, w, origin_us, inflight: the `n` cohort pairs of `n_pairs`."""
        index = np.int32 if n_pairs < 2**31 else np.int64  # half the bytes of a big window
        cohort = cls(
            np.empty(n, np.int32),
            np.empty(n, np.int64),
            np.empty(n, bool),
            np.empty(n, index),
            np.full(n_pairs, -1, index),
        )
        k = 0
        for batch in batches:
            p = batch.column("p").to_numpy()
            at = slice(k, k + len(p))
            cohort.pair[at] = p
            cohort.k_of_pair[p] = np.arange(k, k + len(p))
            cohort.w[at] = batch.column("w").to_numpy()
            cohort.origin_us[at] = batch.column("origin_us").to_numpy()
            cohort.inflight[at] = batch.column("inflight").to_numpy(zero_copy_only=False)
            k += len(p)
        if k != n:  # the cohort was counted by the same predicate it was streamed with
            raise RuntimeError(f"cohort of {n} events, {k} streamed")
        return cohort


class Sightings:
    """What was seen of the cohort at each downstream stage i (1..n-1).

    Per cohort event k: the first time, in flight, dead-lettered; per window: the rows
    of cohort events (for the duplicates).
    """

    def __init__(self, cohort: Cohort, stages: int, n_windows: int) -> None:
        self.stages = stages
        self.window = cohort.w
        n = len(cohort.w)
        hops = range(stages)  # index 0 (the origin) stays unused: stage i is at [i]
        self.first = [np.full(n if i else 0, NOT_SEEN, np.int64) for i in hops]
        self.inflight = [np.zeros(n if i else 0, bool) for i in hops]
        self.dead = [np.zeros(n if i else 0, bool) for i in hops]
        self.rows = [np.zeros(n_windows, np.int64) for _ in hops]

    def add(self, k: np.ndarray, tag: np.ndarray, t_us: np.ndarray, inflight: np.ndarray) -> None:
        """Fold in rows matched to cohort pairs: `tag` i is stage i's, -i its dead letters'."""
        for i in range(1, self.stages):
            at = tag == i
            if at.any():
                ki = k[at]
                np.minimum.at(self.first[i], ki, t_us[at])
                self.rows[i] += np.bincount(self.window[ki], minlength=len(self.rows[i]))
                self.inflight[i][ki[inflight[at]]] = True
            dead = tag == -i
            if dead.any():
                self.dead[i][k[dead]] = True


@dataclass
class Missing:
    """The cohort events that did not make it, as arrays (one entry per event)."""

    k: np.ndarray  # int64
    hop: np.ndarray  # int8: the stage it did not reach
    outcome: np.ndarray  # int8: an index into OUTCOMES
    last_seen_us: np.ndarray  # int64: its first time at the stage before

    def arrow(self, origin_us: np.ndarray, pair: np.ndarray) -> pa.Table:
        """Columns p (the event's pair), hop, outcome, origin_time, last_seen_at."""
        ts = pa.timestamp("us", tz="UTC")
        return pa.table(
            {
                "p": pair[self.k],
                "hop": self.hop,
                "outcome": pa.DictionaryArray.from_arrays(
                    pa.array(self.outcome, pa.int8()), pa.array(OUTCOMES)
                ),
                "origin_time": pa.array(origin_us[self.k], ts),
                # Passed the stage before only by a dead letter's evidence: not seen there.
                "last_seen_at": pa.array(self.last_seen_us, ts, mask=self.last_seen_us == NOT_SEEN),
            }
        )


def hop_counts(
    cohort: Cohort,
    seen: Sightings,
    window_end_us: np.ndarray,
    horizon_us: list[int | None],
    stalled: np.ndarray | None = None,
) -> tuple[list[list[dict[str, Any]]], Missing]:
    """Per hop 1..n-1 and window, the counters (all but orphans); and the missing events.

    An event passed stage i if it was seen at i or later, or dead-lettered on a
    later hop; it is charged to the first hop it did not pass, as dead-lettered,
    pending (in flight at the stage before), unverifiable (older than the stage's
    retention horizon, `horizon_us[i]`) or lost, in that order. In a window
    `stalled` (ended more than `window.stall` ago) nothing is in flight any more:
    such an event is lost, and counted in the hop's `stalled` (not a counter of
    the report: it names the loss in the notes).
    """
    n, events, n_windows = seen.stages, len(cohort.w), len(window_end_us)
    w, origin, first = cohort.w, cohort.origin_us, seen.first
    has = [np.ones(events, bool)] + [f != NOT_SEEN for f in first[1:]]
    passed = [has[0]] * n
    later = np.zeros(events, bool)
    for i in range(n - 1, 0, -1):
        later = later | has[i]
        if i + 1 < n:
            # A dead letter of the hop into i + 1 was taken from stage i: it passed i
            # (Kafka retention may have deleted the message the loader failed on).
            later = later | seen.dead[i + 1]
        passed[i] = later
    # passed[i] implies passed[i - 1]: the first hop not passed is 1 + the passed ones.
    hop = np.ones(events, np.int8)
    for i in range(1, n):
        hop += passed[i]
    outcome = np.full(events, _LOST, np.int8)
    past_stall = np.zeros(events, bool) if stalled is None else stalled[w]
    stuck = []
    for i in range(1, n):
        at = hop == i
        before = cohort.inflight if i == 1 else seen.inflight[i - 1]
        stuck.append(at & before & past_stall & ~seen.dead[i])
        before = before & ~past_stall
        code = np.where(seen.dead[i], _DEAD, np.where(before, _PENDING, _LOST)).astype(np.int8)
        if horizon_us[i] is not None:
            code[(code == _LOST) & (origin < horizon_us[i])] = _UNVERIFIABLE
        outcome[at] = code[at]

    def per_window(mask: np.ndarray) -> np.ndarray:
        return np.bincount(w[mask], minlength=n_windows)

    hops = []
    for i in range(1, n):
        at = hop == i
        counters = {
            "upstream": per_window(passed[i - 1]),
            "arrived": per_window(passed[i]),
            "lost": per_window(at & (outcome == _LOST)),
            "dead_lettered": per_window(at & (outcome == _DEAD)),
            "pending": per_window(at & (outcome == _PENDING)),
            "unverifiable": per_window(at & (outcome == _UNVERIFIABLE)),
            "late": per_window(has[i] & (first[i] >= window_end_us[w])),
            "duplicates": seen.rows[i] - per_window(has[i]),
            "stalled": per_window(stuck[i - 1] & (outcome == _LOST)),
        }
        latency = _latencies(first[i], origin, w, has[i], n_windows)
        hops.append(
            [
                {name: int(values[j]) for name, values in counters.items()}
                | {"latency_ms": latency[j]}
                for j in range(n_windows)
            ]
        )
    missing = np.flatnonzero(hop < n)
    hop_m = hop[missing]
    last_seen = origin[missing].copy()
    for i in range(2, n):
        at = hop_m == i
        last_seen[at] = first[i - 1][missing[at]]
    return hops, Missing(missing, hop_m, outcome[missing], last_seen)


def early_arrivals(
    cohort: Cohort, seen: Sightings, n_windows: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hop 1..n-1 and window: arrived events first seen before their origin time.

    How many, and the earliest of them (microseconds, <= 0; 0 when none).

    A latency below zero means the stage's clock is behind the origin's: never
    reported silently (the notes say so, `loss.clock_notes`).
    """
    out = []
    for i in range(1, seen.stages):
        has = seen.first[i] != NOT_SEEN
        lat = seen.first[i][has] - cohort.origin_us[has]
        early = lat < 0
        w = cohort.w[has][early]
        worst = np.zeros(n_windows, np.int64)
        np.minimum.at(worst, w, lat[early])
        out.append((np.bincount(w, minlength=n_windows), worst))
    return out


def arrived_latencies(cohort: Cohort, seen: Sightings, n_windows: int) -> list[list[np.ndarray]]:
    """Per hop 1..n-1 and window: the arrived events' latencies (µs), sorted."""
    out = []
    for i in range(1, seen.stages):
        has = seen.first[i] != NOT_SEEN
        us = seen.first[i][has] - cohort.origin_us[has]
        w = cohort.w[has]
        out.append([np.sort(us[w == j] if n_windows > 1 else us) for j in range(n_windows)])
    return out


def picked_from_sorted(parts: list[np.ndarray]) -> dict[str, float | None]:
    """`_picked` of the concatenation of sorted arrays, without concatenating them.

    Each quantile is the value at its position in the union: the least value v
    with more than that many values <= v, found by bisecting the int64 range (at most
    64 steps of one `searchsorted` per part), so memory-mapped parts are touched at a
    few pages each. Exact: the same value as `_picked` of all of them.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return {name: None for name in (*QUANTILES, "max")}
    n = sum(len(p) for p in parts)
    lowest, highest = min(int(p[0]) for p in parts), max(int(p[-1]) for p in parts)
    picked: dict[str, float | None] = {}
    for name, (num, den) in QUANTILES.items():
        rank = max(1, -(-n * num // den))  # the value with `rank` values <= it
        lo, hi = lowest, highest
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(int(np.searchsorted(p, mid, side="right")) for p in parts) >= rank:
                hi = mid
            else:
                lo = mid + 1
        picked[name] = float(lo) / 1000.0
    return picked | {"max": float(highest) / 1000.0}


def _latencies(
    first: np.ndarray, origin: np.ndarray, w: np.ndarray, has: np.ndarray, n_windows: int
) -> list[dict[str, float | None]]:
    """Per window, p50/p95/p99/max of the arrived events' latency, as DuckDB's quantile_disc.

    Ordered as exact microseconds (ms = us / 1000.0 keeps the order); only the
    picked values become floats.
    """
    us = first[has]
    us -= origin[has]
    if n_windows == 1:
        return [_picked(us)]
    at = w[has]
    return [_picked(us[at == j]) for j in range(n_windows)]


def _picked(us: np.ndarray) -> dict[str, float | None]:
    """Reorders `us` in place."""
    if not len(us):
        return {name: None for name in (*QUANTILES, "max")}
    n = len(us)
    at = {name: max(1, -(-n * num // den)) - 1 for name, (num, den) in QUANTILES.items()}
    worst = us.max()
    us.partition(sorted(set(at.values())))
    picked: dict[str, float | None] = {name: float(us[i]) / 1000.0 for name, i in at.items()}
    return picked | {"max": float(worst) / 1000.0}
