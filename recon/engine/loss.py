"""Per-hop loss metrics of a run of windows, from the ledgers' Arrow tables.

The algorithm (DESIGN.md "Semantics"): the cohort of window W is the distinct
IDs whose first origin row in W's origin search range [start - grace,
end + skew) lies in W; an event passed stage i if it is seen at stage i or any
later stage within [start - skew, end + grace); each event that did not make
it is charged to the first hop where it vanished, as dead-lettered, pending,
unverifiable or lost, in that order of precedence. Everything is on distinct
IDs, so duplicates cannot hide a loss.

Every window's numbers depend only on rows inside its own search ranges, so
reconciling windows one at a time or many from one read gives the same result
(a read holds every row of its range: for Kafka, within `out_of_order`); many
at once lets each source be read once instead of once per window.

DuckDB does the work on IDs: it groups the origin rows into (window, ID)
pairs, numbered 0..N-1, and looks every downstream row up in them; the
cohort's pairs are then numbered 0..n-1 (`sightings.Cohort`). What was seen
of each cohort event is folded into arrays indexed by that number
(`sightings`); the missing events' IDs and places come back from DuckDB.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict

import duckdb
import numpy as np
import pyarrow as pa

from recon.engine import schemas
from recon.engine.sightings import (
    Cohort,
    Sightings,
    arrived_latencies,
    early_arrivals,
    hop_counts,
)
from recon.model import MISSING_SCHEMA, Ranges, SchemaIdUse, StageInput, StageMetrics, Window
from recon.timeutil import epoch_us

_TS = pa.timestamp("us", tz="UTC")
# Matched rows per batch out of DuckDB into the sightings' arrays.
_BATCH_ROWS = 1 << 18
# A pair of `seen` (s) in the cohort of its window (w): its first time is inside the window.
_COHORT = "s.origin_time >= w.ws AND s.origin_time < w.we"
# A row's place, kept as a struct while aggregating and formatted only for missing events.
_PLACE = (
    "CASE WHEN s.partition IS NULL THEN s.location "
    "ELSE s.location || '[' || s.partition || ']@' || s.\"offset\" END"
)


@dataclass
class Computed:
    """What the algorithm found for one window."""

    events: int
    stages: list[StageMetrics]  # origin first, in pipeline order
    end_to_end: StageMetrics
    missing: pa.Table  # MISSING_SCHEMA
    # Per hop stage: events charged as lost because they were in flight past `stall`.
    stalled: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the numbers alone would hide
    schema_ids: list[SchemaIdUse] = field(default_factory=list)  # schemas.py
    # Per hop: arrived events seen before their origin time, and the earliest (µs, <= 0).
    early: list[tuple[int, int]] = field(default_factory=list)
    # Per hop, with `compute_many(latencies=True)`: the arrived events' latencies (µs),
    # sorted; what a sharded window's exact percentiles are merged from.
    latencies_us: list[np.ndarray] | None = None


def compute(window: Window, stages: list[StageInput], ranges: Ranges | None = None) -> Computed:
    """Reconcile one window (see `compute_many`)."""
    return compute_many([window], stages, ranges)[0]


def compute_many(
    windows: list[Window],
    stages: list[StageInput],
    ranges: Ranges | None = None,
    memory_limit: str | None = None,
    stalled: list[bool] | None = None,
    latencies: bool = False,
) -> list[Computed]:
    """Reconcile `windows` from ledgers read over all their search ranges.

    `stages[0]` is the origin. The ledgers may hold rows outside a window's
    ranges; each window only ever looks at its own. In the windows `stalled`
    (ended more than `window.stall` ago) no event is pending any more. With
    `latencies`, each result keeps its hops' sorted latencies (`Computed.latencies_us`).
    """
    ranges = ranges or Ranges()
    settings: dict[str, str | bool | int | float | list[str]] = {
        "temp_directory": os.path.join(tempfile.gettempdir(), "recon-duckdb"),
        "preserve_insertion_order": False,
    }
    if memory_limit is not None:  # beyond it, joins and aggregates spill to disk
        settings["memory_limit"] = memory_limit
    con = duckdb.connect(config=settings)
    con.execute("SET TimeZone = 'UTC'")
    con.register("wins", _windows_table(windows, ranges))
    for i, stage in enumerate(stages):
        con.register(f"s{i}", stage.ledger.table)
        dead = [d.table for d in stage.dead_letters]
        con.register(f"d{i}", pa.concat_tables(dead) if dead else stage.ledger.table.slice(0, 0))
        if stage.ledger.committed is not None:
            offsets = stage.ledger.committed
            con.register(
                f"c{i}",
                pa.table(
                    {
                        "partition": pa.array(list(offsets), pa.int32()),
                        "committed": pa.array(list(offsets.values()), pa.int64()),
                    }
                ),
            )
    con.execute(_seen_sql(stages))
    origin = _origin_counts(con, len(windows))
    ((n_pairs,),) = con.execute("SELECT count(*) FROM seen").fetchall()
    cohort = Cohort.from_batches(
        con.sql(
            f"SELECT s.rowid AS p, s.w, epoch_us(s.origin_time) AS origin_us, s.f0 AS inflight "
            f"FROM seen s JOIN wins w ON s.w = w.w WHERE {_COHORT}"
        ).to_arrow_reader(_BATCH_ROWS),
        sum(o["upstream"] for o in origin),
        n_pairs,
    )
    seen, orphans = _sightings(con, stages, cohort, len(windows))
    hops, lost = hop_counts(
        cohort,
        seen,
        np.array([epoch_us(w.end) for w in windows], np.int64),
        [None, *(_horizon_us(s) for s in stages[1:])],
        None if stalled is None else np.array(stalled, bool),
    )
    early = early_arrivals(cohort, seen, len(windows))
    kept = arrived_latencies(cohort, seen, len(windows)) if latencies else None
    for i, hop in enumerate(hops, start=1):
        for w, counts in enumerate(hop):
            counts["orphans"] = orphans.get((w, i), 0)
    con.register("m0", lost.arrow(cohort.origin_us, cohort.pair))
    del cohort, seen, lost  # ~30 bytes an event: gone before the missing events' query
    missing = (
        con.sql(_missing_sql(stages))
        .to_arrow_table()
        .cast(MISSING_SCHEMA.append(pa.field("w", pa.int32())))
    )
    found = schemas.uses(con, stages, missing, len(windows))
    con.close()  # its temp tables go now, not whenever the connection is collected
    results = []
    for w, window in enumerate(windows):
        stuck = {stages[i + 1].name: hop[w].pop("stalled") for i, hop in enumerate(hops)}
        metrics = [StageMetrics(stages[0].name, **origin[w])]
        metrics += [StageMetrics(stages[i + 1].name, **hop[w]) for i, hop in enumerate(hops)]
        for stage, m in zip(stages, metrics, strict=True):
            m.unreadable = _unreadable(stage, window)
        events = metrics[0].arrived
        # One window (a big one, read alone): no filtered copy of its missing IDs.
        mine = missing if len(windows) == 1 else missing.filter(pa.compute.equal(missing["w"], w))
        rows = mine.drop_columns(["w"])
        firsts = [(int(n[w]), int(t[w])) for n, t in early]
        notes = clock_notes(metrics[1:], firsts, ranges.skew)
        notes += schemas.notes(found[w])
        computed = Computed(
            events, metrics, end_to_end_of(events, metrics), rows, stuck, notes, found[w]
        )
        computed.early = firsts
        computed.latencies_us = None if kept is None else [hop[w] for hop in kept]
        results.append(computed)
    return results


def clock_notes(
    hops: list[StageMetrics], early: list[tuple[int, int]], skew: timedelta
) -> list[str]:
    """A note per hop whose events were seen before their origin time (a clock behind).

    Negative latencies are never reported silently; when the median one is
    further behind than `skew`, events near the window's start were searched
    too early (false losses, orphans): the note says which skew would cover it.
    """
    notes = []
    for m, (count, worst_us) in zip(hops, early, strict=True):
        if not count:
            continue
        behind = timedelta(microseconds=-int(worst_us))
        text = (
            f"{m.stage}: {count} of {m.arrived} arrived events were seen before their "
            f"origin time, up to {behind.total_seconds():g}s before: the stage's clock is "
            "behind the origin's"
        )
        p50 = m.latency_ms["p50"]
        if p50 is not None and timedelta(milliseconds=-p50) > skew:
            suggest = math.ceil(behind.total_seconds() / 60) + 1
            text += (
                f"; the median event by {-p50 / 1000:g}s, more than window.skew "
                f"({skew.total_seconds():g}s), so events near the window's edges are "
                f"searched at the wrong time and count as lost or orphans: set "
                f"window.skew to at least {suggest}m, or fix the clock"
            )
        notes.append(text)
    return notes


def _windows_table(windows: list[Window], ranges: Ranges) -> pa.Table:
    columns: dict[str, list[datetime]] = {k: [] for k in ("ws", "we", "olo", "ohi", "dlo", "dhi")}
    for w in windows:
        o, d = ranges.origin(w), ranges.downstream(w)
        for key, value in zip(
            columns, (w.start, w.end, o.start, o.end, d.start, d.end), strict=True
        ):
            columns[key].append(value)
    table = {k: pa.array(v, _TS) for k, v in columns.items()}
    return pa.table({"w": pa.array(range(len(windows)), pa.int32()), **table})


def _unreadable(stage: StageInput, window: Window) -> int:
    """Unusable rows (no usable ID or time) that count in `window` (`BadRecord.counts_in`)."""
    return sum(
        bad.count
        for read in [stage.ledger, *stage.dead_letters]
        for bad in read.bad_records
        if bad.counts_in(window)
    )


def _horizon_us(stage: StageInput) -> int | None:
    """Events older than this may sit in data the stage no longer has (Kafka retention)."""
    until = max((gap.until for gap in stage.ledger.gaps), default=None)
    return None if until is None else epoch_us(until)


def _inflight(i: int, stage: StageInput) -> tuple[str, str]:
    """(row expression, join): whether a row is at or beyond the group's committed offset."""
    if stage.ledger.committed is None:
        return "FALSE", ""
    return (
        # No committed offset for the partition: NULL, and nothing proves it in flight.
        's."offset" >= c.committed',
        f"LEFT JOIN c{i} c ON c.partition = s.partition",
    )


def _seen_sql(stages: list[StageInput]) -> str:
    """`seen`: a row per (window, ID) of the origin rows in the window's origin range.

    The cohort is the IDs whose first such row is inside the window (`_COHORT`).
    `n_in` counts the ID's rows inside the window itself (webhook retries). A
    pair's row number (`rowid`) is its number `p`: numbering the cohort here
    with a window function, and joining back to the windows, cost as much as
    the grouping.
    """
    inflight0, join0 = _inflight(0, stages[0])
    # Without a consumer group nothing is in flight: no aggregate for it.
    f0 = "FALSE" if inflight0 == "FALSE" else f"coalesce(bool_or({inflight0}), FALSE)"
    return f"""CREATE TEMP TABLE seen AS
        SELECT w.w, s.event_id, min(s.stage_time) AS origin_time, {f0} AS f0,
               count(*) FILTER (WHERE s.stage_time >= w.ws AND s.stage_time < w.we) AS n_in
        FROM s0 s JOIN wins w ON s.stage_time >= w.olo AND s.stage_time < w.ohi {join0}
        GROUP BY w.w, s.event_id"""


class _OriginCounts(TypedDict):
    """The origin's counters of one window, as StageMetrics' keyword arguments."""

    upstream: int
    arrived: int
    duplicates: int


def _origin_counts(con: duckdb.DuckDBPyConnection, n: int) -> list[_OriginCounts]:
    """Per window: the cohort, and webhook retries (rows in the window minus distinct IDs)."""
    found = {
        w: (int(events), int(retries))
        for w, events, retries in con.execute(f"""
            SELECT s.w, count(*) FILTER (WHERE {_COHORT}),
                   sum(s.n_in) - count(*) FILTER (WHERE s.n_in > 0)
            FROM seen s JOIN wins w ON s.w = w.w GROUP BY s.w""").fetchall()
    }
    per_window: list[_OriginCounts] = []
    for w in range(n):
        events, retries = found.get(w, (0, 0))
        per_window.append({"upstream": events, "arrived": events, "duplicates": retries})
    return per_window


def _hits_sql(stages: list[StageInput]) -> str:
    """Every downstream row paired with each window whose downstream range holds it.

    Stage i's rows are tagged i and its dead letters -i. Looked up once by
    (window, ID) in `seen`: a hit on a cohort pair `p` is a sighting of that
    event; a row inside its own window with no origin row in that window's
    range is an orphan (`p` -1, its ID in `orphan`).
    """
    rows = []
    for i in range(1, len(stages)):
        inflight, join = _inflight(i, stages[i])
        rows.append(
            f"SELECT s.event_id, s.stage_time AS t, {i}::TINYINT AS tag, "
            f"coalesce({inflight}, FALSE) AS fl FROM s{i} s {join}"
        )
        rows.append(f"SELECT event_id, stage_time, {-i}::TINYINT, FALSE FROM d{i}")
    return f"""
        SELECT coalesce(o.rowid, -1) AS p, x.tag, epoch_us(x.t) AS t, x.fl, x.w,
               CASE WHEN o.rowid IS NULL THEN x.event_id END AS orphan
        FROM (
          SELECT w.w, s.event_id, s.t, s.tag, s.fl, s.t >= w.ws AND s.t < w.we AS own
          FROM ({" UNION ALL ".join(rows)}) s
          JOIN wins w ON s.t >= w.dlo AND s.t < w.dhi) x
        LEFT JOIN seen o ON o.w = x.w AND o.event_id = x.event_id
        WHERE o.rowid IS NOT NULL OR (x.own AND x.tag > 0)"""


def _sightings(
    con: duckdb.DuckDBPyConnection, stages: list[StageInput], cohort: Cohort, n_windows: int
) -> tuple[Sightings, dict[tuple[int, int], int]]:
    """The cohort events' sightings, and the orphans per (window, stage).

    The matched rows stream out of DuckDB a batch at a time into the arrays, so
    a big window's millions of them are never held at once.
    """
    seen = Sightings(cohort, len(stages), n_windows)
    orphans = []
    reader = con.sql(_hits_sql(stages)).to_arrow_reader(_BATCH_ROWS)
    for batch in reader:
        p = batch.column("p").to_numpy()
        paired = p >= 0
        if not paired.all():
            orphans.append(batch.filter(pa.array(~paired)).select(["w", "tag", "orphan"]))
        k = np.full(len(p), -1, np.int64)
        k[paired] = cohort.k_of_pair[p[paired]]
        mine = k >= 0  # pairs outside the cohort are some other window's events
        seen.add(
            k[mine],
            batch.column("tag").to_numpy()[mine],
            batch.column("t").to_numpy()[mine],
            batch.column("fl").to_numpy(zero_copy_only=False)[mine],
        )
    counts: dict[tuple[int, int], int] = {}
    if orphans:
        # Distinct IDs: an orphan seen twice in its window (a duplicate) counts once.
        distinct = (
            pa.Table.from_batches(orphans)
            .group_by(["w", "tag"])
            .aggregate([("orphan", "count_distinct")])
        )
        columns = (distinct[c].to_pylist() for c in ("w", "tag", "orphan_count_distinct"))
        for w, tag, count in zip(*columns, strict=True):
            counts[(w, tag)] = count
    return seen, counts


def end_to_end_of(events: int, hops: list[StageMetrics]) -> StageMetrics:
    """Each lost event is charged to exactly one hop, so end-to-end counts are sums."""
    last, downstream = hops[-1], hops[1:]
    return StageMetrics(
        "end_to_end",
        upstream=events,
        arrived=last.arrived,
        lost=sum(h.lost for h in downstream),
        dead_lettered=sum(h.dead_lettered for h in downstream),
        pending=sum(h.pending for h in downstream),
        unverifiable=sum(h.unverifiable for h in downstream),
        late=last.late,
        duplicates=sum(h.duplicates for h in hops),
        orphans=sum(h.orphans for h in downstream),
        unreadable=sum(h.unreadable for h in hops),
        latency_ms=dict(last.latency_ms),
    )


def _missing_sql(stages: list[StageInput]) -> str:
    """The missing events with where they were last seen.

    The place (table, file, topic[partition]@offset) is looked up only for the
    missing events, from the row of their last stage at the time they were seen;
    a ledger with one place (a table, one file) needs no look-up.
    """
    names = [s.name for s in stages]
    n = len(stages)
    stage_name = " ".join(f"WHEN {i} THEN {_literal(names[i])}" for i in range(1, n))
    last_stage = " ".join(f"WHEN {i} THEN {_literal(names[i - 1])}" for i in range(1, n))
    one = {i: _one_place(stages[i - 1].ledger.table) for i in range(1, n)}
    known = " ".join(f"WHEN {i} THEN {_literal(p)}" for i, p in one.items() if p is not None)
    lookup = [i for i, p in one.items() if p is None]
    places = " UNION ALL ".join(
        f"""SELECT m.w, m.event_id, min({_PLACE}) AS last_location
            FROM m JOIN s{i - 1} s ON s.event_id = m.event_id AND s.stage_time = m.last_seen_at
            WHERE m.hop = {i} GROUP BY m.w, m.event_id"""
        for i in lookup
    )
    # No time at the stage before (it passed it by a dead letter's evidence): no place.
    place = (
        f"CASE WHEN m.last_seen_at IS NOT NULL THEN CASE m.hop {known} END END" if known else "NULL"
    )
    if lookup:
        place = f"coalesce({place}, p.last_location)"
    return f"""
      WITH m AS (
        SELECT c.w, c.event_id, m0.hop, m0.outcome::VARCHAR AS outcome, m0.origin_time,
               m0.last_seen_at
        FROM m0 JOIN seen c ON c.rowid = m0.p
      ){f", places AS ({places})" if lookup else ""}
      SELECT m.event_id, CASE m.hop {stage_name} END AS stage, m.outcome, m.origin_time,
             CASE m.hop {last_stage} END AS last_stage, m.last_seen_at,
             {place} AS last_location, m.w
      FROM m{" LEFT JOIN places p ON p.w = m.w AND p.event_id = m.event_id" if lookup else ""}
      ORDER BY m.w, m.hop, m.event_id
    """


def _one_place(ledger: pa.Table) -> str | None:
    """The place of every row of a ledger that has one (no partitions, one location)."""
    location = ledger["location"]
    if (
        ledger.num_rows == 0
        or ledger["partition"].null_count != ledger.num_rows
        or location.null_count
        or not pa.types.is_dictionary(location.type)
    ):
        return None
    # Each chunk's dictionary holds at least the places of its rows.
    places: set[str] = set()
    for chunk in location.chunks:
        if len(chunk.dictionary) > 1:
            return None
        places.update(chunk.dictionary.to_pylist())
    return places.pop() if len(places) == 1 else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
