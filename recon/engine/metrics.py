"""Per-hop loss metrics of one window, computed in DuckDB over the ledgers' Arrow tables.

The algorithm (DESIGN.md "Semantics"): the cohort is the distinct IDs whose
first origin time is in the window; an event passed stage i if it is seen at
stage i or any later stage; each event that did not make it is charged to the
first hop where it vanished, as dead-lettered, pending, unverifiable or lost,
in that order of precedence. Everything is on distinct IDs, so duplicates
cannot hide a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa

from recon.model import LedgerRead, StageMetrics, Window

# A row's place, readable: "topic[2]@1234", a parquet file, or a table name.
_LOCATION = (
    "CASE WHEN s.partition IS NULL THEN s.location "
    "ELSE s.location || '[' || s.partition || ']@' || s.\"offset\" END"
)
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


@dataclass
class StageInput:
    """One stage's reads for a window: its ledger and the dead-letter sinks of its inbound hop."""

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


def compute(window: Window, stages: list[StageInput]) -> Computed:
    """Reconcile one window.

    `stages[0]` is the origin, read over [start - grace, end + skew); the others
    over [start - skew, end + grace).
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for i, stage in enumerate(stages):
        con.register(f"s{i}", stage.ledger.table)
        dead = [d.table for d in stage.dead_letters]
        con.register(
            f"d{i}", pa.concat_tables(dead) if dead else stages[0].ledger.table.slice(0, 0)
        )
        if stage.ledger.committed is not None:
            committed = pa.table(
                {
                    "partition": pa.array(list(stage.ledger.committed), pa.int32()),
                    "committed": pa.array(list(stage.ledger.committed.values()), pa.int64()),
                }
            )
            con.register(f"c{i}", committed)
    params = {"start": window.start, "end": window.end}
    cohort_sql, trace_sql = _trace_sql(stages)
    con.execute(cohort_sql, params)
    con.execute(trace_sql)
    events = con.execute("SELECT count(*) FROM trace").fetchall()[0][0]  # type: ignore[index]
    metrics = [_origin_metrics(con, stages[0], params)]
    for i in range(1, len(stages)):
        metrics.append(_hop_metrics(con, stages, i, params))
    missing = con.sql(_missing_sql(stages)).to_arrow_table().cast(MISSING_SCHEMA)
    return Computed(events, metrics, _end_to_end(events, metrics), missing)


def _horizon(stage: StageInput) -> datetime | None:
    """Events older than this may sit in data the stage no longer has (Kafka retention)."""
    return max((gap.until for gap in stage.ledger.gaps), default=None)


def _aggregate(i: int, stage: StageInput, source: str) -> str:
    """Per cohort event at stage i: first time, rows, first place, and whether in flight.

    In flight: a consumer group is set and one of the event's copies is at or
    beyond the group's committed offset.
    """
    inflight = "FALSE"
    join = ""
    if stage.ledger.committed is not None:
        inflight = 'bool_or(s."offset" >= coalesce(c.committed, 0))'
        join = f"LEFT JOIN c{i} c ON c.partition = s.partition"
    return f"""
        SELECT s.event_id, min(s.stage_time) AS t, count(*) AS n,
               arg_min({_LOCATION}, s.stage_time) AS loc, {inflight} AS inflight
        FROM s{i} s {join}
        WHERE s.event_id IN (SELECT event_id FROM {source})
        GROUP BY s.event_id"""


def _trace_sql(stages: list[StageInput]) -> tuple[str, str]:
    """A row per cohort event with where it was seen, and the hop and outcome of its loss."""
    n = len(stages)
    cols, joins = [], []
    for i in range(1, n):
        cols.append(
            f"a{i}.t AS t{i}, coalesce(a{i}.n, 0) AS n{i}, a{i}.loc AS loc{i}, "
            f"coalesce(a{i}.inflight, FALSE) AS f{i}, x{i}.event_id IS NOT NULL AS dl{i}"
        )
        joins.append(
            f"LEFT JOIN ({_aggregate(i, stages[i], 'cohort')}) a{i} "
            f"ON a{i}.event_id = cohort.event_id "
            f"LEFT JOIN (SELECT DISTINCT event_id FROM d{i}) x{i} "
            f"ON x{i}.event_id = cohort.event_id"
        )
    passed = [f"t{j} IS NOT NULL" for j in range(n)]
    passed[0] = "TRUE"
    passed_expr = {i: " OR ".join(passed[i:]) for i in range(1, n)}
    hop_cases = " ".join(f"WHEN NOT ({passed_expr[i]}) THEN {i}" for i in range(1, n))
    outcome_cases = []
    for i in range(1, n):
        horizon = _horizon(stages[i])
        unverifiable = (
            (f"WHEN origin_time < TIMESTAMPTZ '{horizon.isoformat()}' THEN 'unverifiable'")
            if horizon
            else ""
        )
        outcome_cases.append(
            f"WHEN hop = {i} THEN CASE WHEN dl{i} THEN 'dead_lettered' "
            f"WHEN f{i - 1} THEN 'pending' {unverifiable} ELSE 'lost' END"
        )
    passed_cols = ", ".join(f"({passed_expr[i]}) AS p{i}" for i in range(1, n))
    cohort = f"""
    CREATE TEMP TABLE cohort AS
      SELECT s.event_id, min(s.stage_time) AS origin_time,
             arg_min({_LOCATION}, s.stage_time) AS loc0, {_origin_inflight(stages[0])} AS f0
      FROM s0 s {
        "LEFT JOIN c0 c ON c.partition = s.partition"
        if stages[0].ledger.committed is not None
        else ""
    }
      GROUP BY s.event_id
      HAVING min(s.stage_time) >= $start AND min(s.stage_time) < $end
    """
    trace = f"""
    CREATE TEMP TABLE trace AS
      SELECT *, CASE {" ".join(outcome_cases)} END AS outcome FROM (
        SELECT *, TRUE AS p0, {passed_cols}, CASE {hop_cases} END AS hop FROM (
          SELECT cohort.*, {", ".join(cols)} FROM cohort {" ".join(joins)}
        )
      )
    """
    return cohort, trace


def _origin_inflight(origin: StageInput) -> str:
    if origin.ledger.committed is None:
        return "FALSE"
    return 'bool_or(s."offset" >= coalesce(c.committed, 0))'


def _origin_metrics(
    con: duckdb.DuckDBPyConnection, origin: StageInput, params: dict[str, datetime]
) -> StageMetrics:
    # Webhook retries: rows in the window minus distinct IDs in the window.
    rows, distinct = con.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM s0 "
        "WHERE stage_time >= $start AND stage_time < $end",
        params,
    ).fetchall()[0]  # type: ignore[misc]
    events = con.execute("SELECT count(*) FROM trace").fetchall()[0][0]  # type: ignore[index]
    return StageMetrics(
        origin.name,
        upstream=events,
        arrived=events,
        duplicates=rows - distinct,
        unreadable=origin.ledger.unreadable,
    )


def _hop_metrics(
    con: duckdb.DuckDBPyConnection, stages: list[StageInput], i: int, params: dict[str, datetime]
) -> StageMetrics:
    latency = f"(epoch_us(t{i}) - epoch_us(origin_time)) / 1000.0"
    row = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE p{i - 1}),
               count(*) FILTER (WHERE p{i}),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'lost'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'dead_lettered'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'pending'),
               count(*) FILTER (WHERE hop = {i} AND outcome = 'unverifiable'),
               count(*) FILTER (WHERE t{i} >= $end),
               coalesce(sum(n{i}), 0) - count(t{i}),
               quantile_disc({latency}, [0.5, 0.95, 0.99]), max({latency})
        FROM trace
        """,
        {"end": params["end"]},
    ).fetchall()[0]
    assert row is not None
    up, arrived, lost, dead, pending, unverifiable, late, dups, quantiles, worst = row
    orphans = con.execute(
        f"""
        SELECT count(DISTINCT s.event_id) FROM s{i} s
        WHERE s.stage_time >= $start AND s.stage_time < $end
          AND NOT EXISTS (SELECT 1 FROM s0 o WHERE o.event_id = s.event_id)
        """,
        params,
    ).fetchall()[0][0]  # type: ignore[index]
    stage = stages[i]
    p50, p95, p99 = quantiles or (None, None, None)
    return StageMetrics(
        stage.name,
        upstream=up,
        arrived=arrived,
        lost=lost,
        dead_lettered=dead,
        pending=pending,
        unverifiable=unverifiable,
        late=late,
        duplicates=int(dups),
        orphans=orphans,
        unreadable=stage.ledger.unreadable + sum(d.unreadable for d in stage.dead_letters),
        latency_ms={"p50": p50, "p95": p95, "p99": p99, "max": worst},
    )


def _end_to_end(events: int, hops: list[StageMetrics]) -> StageMetrics:
    """Each lost event is charged to exactly one hop, so end-to-end counts are sums."""
    last = hops[-1]
    downstream = hops[1:]
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
    names = [s.name for s in stages]
    stage_name = " ".join(f"WHEN {i} THEN '{names[i]}'" for i in range(1, len(stages)))
    last_stage = " ".join(f"WHEN {i} THEN '{names[i - 1]}'" for i in range(1, len(stages)))
    last_time = " ".join(f"WHEN {i} THEN t{i - 1}" for i in range(2, len(stages)))
    last_loc = " ".join(f"WHEN {i} THEN loc{i - 1}" for i in range(1, len(stages)))
    return f"""
      SELECT event_id, CASE hop {stage_name} END AS stage, outcome, origin_time,
             CASE hop {last_stage} END AS last_stage,
             CASE hop WHEN 1 THEN origin_time {last_time} END AS last_seen_at,
             CASE hop {last_loc} END AS last_location
      FROM trace WHERE hop IS NOT NULL ORDER BY hop, event_id
    """
