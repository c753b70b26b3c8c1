"""Per-hop loss metrics of a run of windows, computed in DuckDB over the ledgers' Arrow tables.

The algorithm (DESIGN.md "Semantics"): the cohort of window W is the distinct
IDs whose first origin row in W's origin search range [start - grace,
end + skew) lies in W; an event passed stage i if it is seen at stage i or any
later stage within [start - skew, end + grace); each event that did not make
it is charged to the first hop where it vanished, as dead-lettered, pending,
unverifiable or lost, in that order of precedence. Everything is on distinct
IDs, so duplicates cannot hide a loss.

Every window's numbers depend only on rows inside its own search ranges, so
reconciling windows one at a time or many from one read gives the same result;
many at once lets each source be read once instead of once per window.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from recon.model import COUNTERS, BadRecord, LedgerRead, StageMetrics, Window

MISSING_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("stage", pa.string()),
        ("outcome", pa.string()),
        ("origin_time", pa.timestamp("us", tz="UTC")),
        ("last_stage", pa.string()),
        ("last_seen_at", pa.timestamp("us", tz="UTC")),
        ("last_location", pa.string()),
    ]
)
_TS = pa.timestamp("us", tz="UTC")
# With the next chunk's reads alongside, 800 MB keeps a 12 M-event day's run under 2 GB.
DUCKDB_MEMORY = os.environ.get("RECON_DUCKDB_MEMORY", "800MB")
# For a window bigger than one read's budget (read alone): its ledgers take the rest.
DUCKDB_MEMORY_BIG_WINDOW = os.environ.get("RECON_DUCKDB_MEMORY_BIG_WINDOW", "400MB")
# A row's place, kept as a struct while aggregating and formatted only for missing events.
_PLACE = (
    "CASE WHEN s.partition IS NULL THEN s.location "
    "ELSE s.location || '[' || s.partition || ']@' || s.\"offset\" END"
)


@dataclass
class StageInput:
    """One stage's reads: its ledger and the dead-letter sinks of its inbound hop."""

    name: str
    ledger: LedgerRead
    dead_letters: list[LedgerRead] = field(default_factory=list)


@dataclass
class Computed:
    """What the algorithm found for one window."""

    events: int
    stages: list[StageMetrics]  # origin first, in pipeline order
    end_to_end: StageMetrics
    missing: pa.Table  # MISSING_SCHEMA


@dataclass(frozen=True)
class Ranges:
    """How far around a window each side is searched."""

    grace: timedelta = timedelta(minutes=30)
    skew: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        # The orphan check finds a row's own window among the downstream ranges that
        # hold it, which needs each window inside its own downstream range.
        if self.grace < timedelta(0) or self.skew < timedelta(0):
            raise ValueError(f"grace and skew must not be negative: {self}")

    def origin(self, w: Window) -> Window:
        """Origin rows that can match the window's events (retries, orphan checks)."""
        return w.widen(self.grace, self.skew)

    def downstream(self, w: Window) -> Window:
        """Downstream rows of the window's events: late (grace) and skewed arrivals."""
        return w.widen(self.skew, self.grace)


def compute(window: Window, stages: list[StageInput], ranges: Ranges | None = None) -> Computed:
    """Reconcile one window (see `compute_many`)."""
    return compute_many([window], stages, ranges)[0]


def compute_many(
    windows: list[Window],
    stages: list[StageInput],
    ranges: Ranges | None = None,
    memory_limit: str | None = None,
) -> list[Computed]:
    """Reconcile `windows` from ledgers read over all their search ranges.

    `stages[0]` is the origin. The ledgers may hold rows outside a window's
    ranges; each window only ever looks at its own.
    """
    ranges = ranges or Ranges()
    con = duckdb.connect(
        config={
            # Beyond it, joins and aggregates spill to disk.
            "memory_limit": memory_limit or DUCKDB_MEMORY,
            "temp_directory": os.path.join(tempfile.gettempdir(), "recon-duckdb"),
            "preserve_insertion_order": False,
        }
    )
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
    for statement in _trace_sql(stages):
        con.execute(statement)
    origin = _origin_counts(con, len(windows))
    hops = [_hop_counts(con, i, len(windows)) for i in range(1, len(stages))]
    missing = (
        con.sql(_missing_sql(stages))
        .to_arrow_table()
        .cast(MISSING_SCHEMA.append(pa.field("w", pa.int32())))
    )
    con.close()  # its temp tables go now, not whenever the connection is collected
    results = []
    for w, window in enumerate(windows):
        metrics = [StageMetrics(stages[0].name, **origin[w])]
        metrics += [StageMetrics(stages[i + 1].name, **hop[w]) for i, hop in enumerate(hops)]
        for stage, m in zip(stages, metrics, strict=True):
            m.unreadable = _unreadable(stage, window, ranges, origin=stage is stages[0])
        events = metrics[0].arrived
        # One window (a big one, read alone): no filtered copy of its missing IDs.
        mine = missing if len(windows) == 1 else missing.filter(pa.compute.equal(missing["w"], w))
        rows = mine.drop_columns(["w"])
        results.append(Computed(events, metrics, _end_to_end(events, metrics), rows))
    return results


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


def _unreadable(stage: StageInput, window: Window, ranges: Ranges, origin: bool) -> int:
    """Rows without a usable ID in the window's search range (all, when their time is unknown)."""
    span = ranges.origin(window) if origin else ranges.downstream(window)

    def counted(bad: BadRecord) -> bool:
        return bad.time is None or span.start <= bad.time < span.end

    return sum(
        bad.count
        for read in [stage.ledger, *stage.dead_letters]
        for bad in read.bad_records
        if counted(bad)
    )


def _horizon(stage: StageInput) -> datetime | None:
    """Events older than this may sit in data the stage no longer has (Kafka retention)."""
    return max((gap.until for gap in stage.ledger.gaps), default=None)


def _inflight(i: int, stage: StageInput) -> tuple[str, str]:
    """(row expression, join): whether a row is at or beyond the group's committed offset."""
    if stage.ledger.committed is None:
        return "FALSE", ""
    return (
        # No committed offset for the partition: NULL, and nothing proves it in flight.
        's."offset" >= c.committed',
        f"LEFT JOIN c{i} c ON c.partition = s.partition",
    )


def _trace_sql(stages: list[StageInput]) -> list[str]:
    """Statements that build `trace`, a row per (window, cohort event), and `orphans`.

    Each trace row says where the event was seen, and the hop and outcome of its loss.
    """
    inflight0, join0 = _inflight(0, stages[0])
    n = len(stages)
    statements = [
        # Per window, the origin rows of its search range (an ID seen there: `seen`);
        # the cohort is the IDs whose first such row is inside the window. `n_in`
        # counts the ID's rows inside the window itself (webhook retries). `k` numbers
        # the (window, ID) pairs: later joins and groups use it, not the ID.
        f"""CREATE TEMP TABLE seen AS
            SELECT o.*, (row_number() OVER ())::BIGINT AS k,
                   o.origin_time >= w.ws AND o.origin_time < w.we AS cohort
            FROM (
              SELECT w.w, s.event_id, min(s.stage_time) AS origin_time,
                     coalesce(bool_or({inflight0}), FALSE) AS f0,
                     count(*) FILTER (WHERE s.stage_time >= w.ws AND s.stage_time < w.we)
                       AS n_in
              FROM s0 s JOIN wins w ON s.stage_time >= w.olo AND s.stage_time < w.ohi {join0}
              GROUP BY w.w, s.event_id) o
            JOIN wins w ON o.w = w.w""",
    ]
    # Every downstream row (stage i: tag i; its dead letters: tag -i) paired with each
    # window whose downstream range holds it, then looked up once by (window, ID):
    # a hit on a cohort pair is a sighting of that event; a row inside its own window
    # with no origin row in that window's range is an orphan. One hash table of
    # `seen` serves every stage, its dead letters and the orphan check.
    rows = []
    for i in range(1, n):
        inflight, join = _inflight(i, stages[i])
        rows.append(
            f"SELECT s.event_id, s.stage_time AS t, {i}::TINYINT AS tag, {inflight} AS fl "
            f"FROM s{i} s {join}"
        )
        rows.append(f"SELECT event_id, stage_time, {-i}::TINYINT, FALSE FROM d{i}")
    statements.append(f"""CREATE TEMP TABLE hits AS
        SELECT o.k, o.cohort, x.tag, x.t, x.fl, x.w,
               CASE WHEN o.k IS NULL AND x.own AND x.tag > 0 THEN x.event_id END AS orphan
        FROM (
          SELECT w.w, s.event_id, s.t, s.tag, s.fl, s.t >= w.ws AND s.t < w.we AS own
          FROM ({" UNION ALL ".join(rows)}) s
          JOIN wins w ON s.t >= w.dlo AND s.t < w.dhi) x
        LEFT JOIN seen o ON o.w = x.w AND o.event_id = x.event_id""")
    # Per cohort event and stage: first sighting, rows, in flight, dead-lettered.
    per_stage = []
    for i in range(1, n):
        per_stage.append(
            f"min(CASE WHEN tag = {i} THEN t END) AS t{i}, "
            f"count(CASE WHEN tag = {i} THEN 1 END) AS n{i}, "
            f"coalesce(bool_or(CASE WHEN tag = {i} THEN fl END), FALSE) AS f{i}, "
            f"coalesce(bool_or(tag = {-i}), FALSE) AS dl{i}"
        )
    statements.append(f"""CREATE TEMP TABLE sightings AS
        SELECT k, {", ".join(per_stage)} FROM hits WHERE cohort GROUP BY k""")
    statements.append("""CREATE TEMP TABLE orphans AS
        SELECT w, tag, count(DISTINCT orphan) AS orphans FROM hits
        WHERE orphan IS NOT NULL GROUP BY w, tag""")
    passed = {i: " OR ".join(f"t{j} IS NOT NULL" for j in range(i, n)) for i in range(1, n)}
    hop = " ".join(f"WHEN NOT ({passed[i]}) THEN {i}" for i in range(1, n))
    outcome = []
    for i in range(1, n):
        horizon = _horizon(stages[i])
        unverifiable = (
            (f"WHEN origin_time < TIMESTAMPTZ '{horizon.isoformat()}' THEN 'unverifiable'")
            if horizon
            else ""
        )
        outcome.append(
            f"WHEN hop = {i} THEN CASE WHEN dl{i} THEN 'dead_lettered' "
            f"WHEN f{i - 1} THEN 'pending' {unverifiable} ELSE 'lost' END"
        )
    passed_cols = ", ".join(f"({passed[i]}) AS p{i}" for i in range(1, n))
    cols = ", ".join(
        f"a.t{i}, coalesce(a.n{i}, 0) AS n{i}, coalesce(a.f{i}, FALSE) AS f{i}, "
        f"coalesce(a.dl{i}, FALSE) AS dl{i}"
        for i in range(1, n)
    )
    # Only what the counts need: the ID and the places stay in `seen` and are
    # joined back for the missing events only.
    statements.append(f"""CREATE TEMP TABLE trace AS
        SELECT *, CASE {" ".join(outcome)} END AS outcome FROM (
          SELECT *, TRUE AS p0, {passed_cols}, CASE {hop} END AS hop FROM (
            SELECT c.k, c.w, w.we, c.origin_time, c.f0, {cols}
            FROM seen c JOIN wins w ON w.w = c.w LEFT JOIN sightings a ON a.k = c.k
            WHERE c.cohort))""")
    return statements


def _by_window(rows: list[tuple], n: int, names: tuple[str, ...]) -> list[dict]:
    """Rows keyed by window index -> one dict per window; a window without rows gets zeros."""
    found = {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}
    empty = {name: None if name in ("quantiles", "worst") else 0 for name in names}
    return [found.get(w, dict(empty)) for w in range(n)]


def _origin_counts(con: duckdb.DuckDBPyConnection, n: int) -> list[dict]:
    # Webhook retries: rows in the window minus distinct IDs in the window.
    dups = con.execute("""
        SELECT w, sum(n_in) - count(*) FILTER (WHERE n_in > 0) FROM seen
        GROUP BY w""").fetchall()
    events = con.execute("SELECT w, count(*) FROM seen WHERE cohort GROUP BY w").fetchall()
    per_window = []
    for d, e in zip(
        _by_window(dups, n, ("duplicates",)), _by_window(events, n, ("events",)), strict=True
    ):
        count = int(e["events"])
        per_window.append({"upstream": count, "arrived": count, "duplicates": int(d["duplicates"])})
    return per_window


# The hop query's columns: the counters it computes, then the latency aggregates.
_HOP = (*COUNTERS[:8], "quantiles", "worst")


def _hop_counts(con: duckdb.DuckDBPyConnection, i: int, n: int) -> list[dict]:
    latency = f"(epoch_us(t{i}) - epoch_us(origin_time)) / 1000.0"
    rows = con.execute(f"""
        SELECT w, count(*) FILTER (WHERE p{i - 1}),
               count(*) FILTER (WHERE p{i}),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'lost'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'dead_lettered'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'pending'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'unverifiable'),
               count(*) FILTER (WHERE t{i} >= we),
               coalesce(sum(n{i}), 0) - count(t{i}),
               quantile_disc({latency}, [0.5, 0.95, 0.99]), max({latency})
        FROM trace GROUP BY w""").fetchall()
    # Orphans: rows in the window whose ID has no origin row in the window's origin range.
    orphans = con.execute(f"SELECT w, orphans FROM orphans WHERE tag = {i}").fetchall()
    per_window = []
    for counts, orphan in zip(
        _by_window(rows, n, _HOP), _by_window(orphans, n, ("orphans",)), strict=True
    ):
        quantiles = counts.pop("quantiles") or (None, None, None)
        worst = counts.pop("worst")
        per_window.append(
            {
                **{k: int(v) for k, v in counts.items()},
                "orphans": int(orphan["orphans"]),
                "latency_ms": {
                    "p50": quantiles[0],
                    "p95": quantiles[1],
                    "p99": quantiles[2],
                    "max": worst,
                },
            }
        )
    return per_window


def _end_to_end(events: int, hops: list[StageMetrics]) -> StageMetrics:
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
    missing events, from the row of their last stage at the time they were seen.
    """
    names = [s.name for s in stages]
    n = len(stages)
    stage_name = " ".join(f"WHEN {i} THEN '{names[i]}'" for i in range(1, n))
    last_stage = " ".join(f"WHEN {i} THEN '{names[i - 1]}'" for i in range(1, n))
    last_time = " ".join(f"WHEN {i} THEN t{i - 1}" for i in range(2, n))
    places = " UNION ALL ".join(
        f"""SELECT m.w, m.event_id, min({_PLACE}) AS last_location
            FROM m JOIN s{i - 1} s ON s.event_id = m.event_id AND s.stage_time = m.last_seen_at
            WHERE m.hop = {i} GROUP BY m.w, m.event_id"""
        for i in range(1, n)
    )
    return f"""
      WITH m AS (
        SELECT t.w, c.event_id, t.hop, t.outcome, t.origin_time,
               CASE t.hop WHEN 1 THEN t.origin_time {last_time} END AS last_seen_at
        FROM trace t JOIN seen c ON c.k = t.k WHERE t.hop IS NOT NULL
      ), places AS ({places})
      SELECT m.event_id, CASE m.hop {stage_name} END AS stage, m.outcome, m.origin_time,
             CASE m.hop {last_stage} END AS last_stage, m.last_seen_at, p.last_location, m.w
      FROM m LEFT JOIN places p ON p.w = m.w AND p.event_id = m.event_id
      ORDER BY m.w, m.hop, m.event_id
    """
