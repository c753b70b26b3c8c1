"""Where each cohort event was seen, as arrays indexed by its (window, ID) pair, and the counts.

DuckDB numbers the (window, origin ID) pairs 0..n-1 (`k`, see `metrics`) and
matches every downstream row to its pair. From there each per-event fact is a
slot of a dense array: the first time at each stage is a `minimum.at`, the
rows a count, the in-flight and dead-letter flags a scatter. A GROUP BY of the
matched rows with a dozen aggregates cost DuckDB ~1 core-second per 3.5 M
rows; these scatters cost ~0.1 s. The per-window counters are then bincounts.
Times are epoch microseconds (int64), exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

NOT_SEEN = np.iinfo(np.int64).max
# Outcome codes of a missing event, in the order of their precedence in a hop.
OUTCOMES = ("dead_lettered", "pending", "unverifiable", "lost")
_DEAD, _PENDING, _UNVERIFIABLE, _LOST = range(4)
# quantile_disc's positions as exact fractions: DuckDB takes the value at
# max(1, ceil(n * q)) - 1 of the sorted values, in integer arithmetic for a DECIMAL q.
QUANTILES = {"p50": (1, 2), "p95": (19, 20), "p99": (99, 100)}


@dataclass
class Pairs:
    """The origin's (window, ID) pairs, indexed by k."""

    w: np.ndarray  # int32: the window
    origin_us: np.ndarray  # int64: first origin time in the window's origin range
    inflight: np.ndarray  # bool: an origin row at or beyond its group's committed offset
    rows_in: np.ndarray  # int64: origin rows inside the window itself
    cohort: np.ndarray  # bool: the first origin time is inside the window

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Pairs:
        """From columns k, w, origin_us, inflight, rows_in, cohort (rows in any order)."""
        k = table["k"].to_numpy()

        def by_k(name: str, dtype: Any) -> np.ndarray:
            out = np.empty(len(k), dtype)
            out[k] = table[name].to_numpy(zero_copy_only=False)
            return out

        return cls(
            by_k("w", np.int32),
            by_k("origin_us", np.int64),
            by_k("inflight", bool),
            by_k("rows_in", np.int64),
            by_k("cohort", bool),
        )


class Sightings:
    """What was seen of the cohort at each downstream stage i (1..n-1).

    Per pair k: the first time, in flight, dead-lettered; per window: the rows
    of cohort events (for the duplicates).
    """

    def __init__(self, pairs: Pairs, stages: int, n_windows: int) -> None:
        self.stages = stages
        self.window = pairs.w
        n = len(pairs.w)
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

    def arrow(self, origin_us: np.ndarray) -> pa.Table:
        """Columns k, hop, outcome, origin_time, last_seen_at for the missing-events query."""
        ts = pa.timestamp("us", tz="UTC")
        return pa.table(
            {
                "k": self.k,
                "hop": self.hop,
                "outcome": pa.DictionaryArray.from_arrays(
                    pa.array(self.outcome, pa.int8()), pa.array(OUTCOMES)
                ),
                "origin_time": pa.array(origin_us[self.k], ts),
                "last_seen_at": pa.array(self.last_seen_us, ts),
            }
        )


def origin_counts(pairs: Pairs, n_windows: int) -> list[dict[str, int]]:
    """Cohort size and webhook retries (rows in the window minus distinct IDs) per window."""
    events = np.bincount(pairs.w[pairs.cohort], minlength=n_windows)
    rows = np.bincount(pairs.w, weights=pairs.rows_in, minlength=n_windows)  # exact < 2**53
    ids = np.bincount(pairs.w[pairs.rows_in > 0], minlength=n_windows)
    return [
        {"upstream": int(e), "arrived": int(e), "duplicates": int(r) - int(d)}
        for e, r, d in zip(events, rows, ids, strict=True)
    ]


def hop_counts(
    pairs: Pairs,
    seen: Sightings,
    window_end_us: np.ndarray,
    horizon_us: list[int | None],
    n_windows: int,
) -> tuple[list[list[dict[str, Any]]], Missing]:
    """Per hop 1..n-1 and window, the counters (all but orphans); and the missing events.

    An event passed stage i if it was seen at i or later; it is charged to the
    first hop it did not pass, as dead-lettered, pending (in flight at the
    stage before), unverifiable (older than the stage's retention horizon,
    `horizon_us[i]`) or lost, in that order.
    """
    n = seen.stages
    cohort = np.flatnonzero(pairs.cohort)
    w = pairs.w[cohort]
    origin = pairs.origin_us[cohort]
    first = [np.empty(0, np.int64)] + [seen.first[i][cohort] for i in range(1, n)]
    has = [np.ones(len(cohort), bool)] + [f != NOT_SEEN for f in first[1:]]
    passed = [np.empty(0, bool)] * n
    later = np.zeros(len(cohort), bool)
    for i in range(n - 1, 0, -1):
        later = later | has[i]
        passed[i] = later
    passed[0] = np.ones(len(cohort), bool)
    # passed[i] implies passed[i - 1]: the first hop not passed is 1 + the passed ones.
    hop = np.ones(len(cohort), np.int8)
    for i in range(1, n):
        hop += passed[i]
    outcome = np.full(len(cohort), _LOST, np.int8)
    for i in range(1, n):
        at = hop == i
        before = pairs.inflight[cohort] if i == 1 else seen.inflight[i - 1][cohort]
        code = np.where(seen.dead[i][cohort], _DEAD, np.where(before, _PENDING, _LOST))
        if horizon_us[i] is not None:
            code = np.where((code == _LOST) & (origin < horizon_us[i]), _UNVERIFIABLE, code)
        outcome[at] = code[at]

    def per_window(mask: np.ndarray) -> np.ndarray:
        return np.bincount(w[mask], minlength=n_windows)

    hops = []
    for i in range(1, n):
        at = hop == i
        latency = (first[i][has[i]] - origin[has[i]]) / 1000.0
        counters = {
            "upstream": per_window(passed[i - 1]),
            "arrived": per_window(passed[i]),
            "lost": per_window(at & (outcome == _LOST)),
            "dead_lettered": per_window(at & (outcome == _DEAD)),
            "pending": per_window(at & (outcome == _PENDING)),
            "unverifiable": per_window(at & (outcome == _UNVERIFIABLE)),
            "late": per_window(has[i] & (first[i] >= window_end_us[w])),
            "duplicates": seen.rows[i] - per_window(has[i]),
        }
        hops.append(
            [
                {
                    **{name: int(values[j]) for name, values in counters.items()},
                    "latency_ms": _latency(latency[w[has[i]] == j]),
                }
                for j in range(n_windows)
            ]
        )
    missing = np.flatnonzero(hop < n)
    hop_m = hop[missing]
    last_seen = origin[missing].copy()
    for i in range(2, n):
        at = hop_m == i
        last_seen[at] = first[i - 1][missing[at]]
    return hops, Missing(cohort[missing], hop_m, outcome[missing], last_seen)


def _latency(values: np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99/max in ms, as DuckDB's quantile_disc and max give them."""
    if not len(values):
        return {name: None for name in (*QUANTILES, "max")}
    n = len(values)
    at = {name: max(1, -(-n * num // den)) - 1 for name, (num, den) in QUANTILES.items()}
    ordered = np.partition(values, sorted(set(at.values())))
    return {
        **{name: float(ordered[i]) for name, i in at.items()},
        "max": float(values.max()),
    }
