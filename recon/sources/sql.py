"""`sql` source: a table or query in PostgreSQL, read straight into Arrow with ADBC.

The time filter runs in PostgreSQL; ADBC's driver streams the result as
binary COPY and decodes it into Arrow in C++ (3x the rows/s of COPY csv +
Arrow's CSV reader here), never row by row in Python. Counts use psycopg.

The time column may be timestamptz, timestamp (wall times in `timezone`), an
integer epoch (`time_unit`) or ISO 8601 text; each is filtered in PostgreSQL on
its own encoding, with bounds we compute (`_time_filter`). The ID column may be
text, uuid, an integer or bytea (`canonical_ids`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from recon import connections
from recon.errors import ConfigError, SourceError
from recon.model import BadRecord, LedgerRead, Shard, Window
from recon.sources.base import (
    TimedSource,
    TimeKind,
    canonical_ids,
    id_kind,
    in_window,
    ledger_table,
    shown,
    time_kind,
    unit_bound,
    usable_rows,
    utc_times,
    wall_bound,
)
from recon.sources.kind import Kind
from recon.sources.sharding import sql_predicate
from recon.timeutil import epoch_us

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class Config(TimedSource):
    """A PostgreSQL table (`table`, optionally schema-qualified) or a `query`."""

    source: Literal["sql"]
    url: str
    table: str | None = None
    query: str | None = None
    time: str = "received_at"
    connect_timeout_s: int = Field(default=10, ge=1, le=3600)
    # An Airflow Connection (type postgres) instead of `url`: credentials stay out of YAML.
    connection: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_connection(cls, data: Any) -> Any:
        """`connection: ID` gives the URL (from AIRFLOW_CONN_<ID> or Airflow's backends)."""
        return connections.fill_from(data, "url", lambda c: {"url": c.postgresql_url()})

    @model_validator(mode="after")
    def _table_or_query(self) -> Config:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


def _parse_url(url: str) -> URL:
    # SQLAlchemy's URL parser, imported here: `recon check` never needs the rest of
    # SQLAlchemy, and importing it is a noticeable part of that command's budget.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}") from None


def conninfo(url: str, timeout_s: int = 10) -> str:
    """Libpq connection string for a SQLAlchemy PostgreSQL URL."""
    parsed = _parse_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError(f"sql source needs a postgresql URL, got {parsed.drivername}://")
    # libpq's keywords; the URL's query parameters are passed on as SQLAlchemy parsed them.
    parts: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        "connect_timeout": timeout_s,
        **parsed.query,
    }
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def describe(cfg: Config) -> str:
    """Where this source reads from, password hidden."""
    what = cfg.table or "query"
    return f"sql {what} @ {_parse_url(cfg.url).render_as_string(hide_password=True)}"


def _quoted(name: str) -> str:
    """A PostgreSQL identifier, possibly schema-qualified, quoted."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _relation(cfg: Config) -> str:
    return _quoted(cfg.table) if cfg.table is not None else f"({cfg.query}) AS recon_q"


# The Arrow type ADBC reads each PostgreSQL type of a time column as (pg_type.typname):
# `count_many` learns the column's type with psycopg, and judges it as `read` does.
_PG_TIME_TYPES = {
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
}


def _pg_type(field: pa.Field) -> str:
    """The PostgreSQL type name ADBC records on a result column (int8, uuid, bytea...)."""
    name: str = (field.metadata or {}).get(b"POSTGRESQL:type", str(field.type).encode()).decode()
    return name


# ID types whose `::text` is the canonical text form (`canonical_ids`): a shard's hash
# predicate on it is the hash recon computes (bytea is decoded as UTF-8 by recon: not pushed).
_TEXT_IDS = frozenset({"text", "varchar", "bpchar", "name", "uuid", "int2", "int4", "int8"})


def read(cfg: Config, window: Window) -> LedgerRead:
    """Rows of the table/query whose time column is in `window`."""
    return _read(cfg, window, None)


def read_shard(cfg: Config, window: Window, shard: Shard) -> LedgerRead:
    """`read`, with the shard's hash predicate run in PostgreSQL where it is exact.

    Pushed down when the ID's text is its canonical form, the time column is no
    text (text that is no time is unreadable, and shard 0 must see every such row)
    and the database is UTF8 (MD5 hashes its bytes); else every row is read, and
    `sharding.keep` filters them all the same.
    """
    return _read(cfg, window, shard)


def _read(cfg: Config, window: Window, shard: Shard | None) -> LedgerRead:
    # Imported here: ADBC's DB-API module imports pyarrow.dataset and pandas, which
    # `recon check` (counts only) never needs.
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as adbc_pg

    try:
        with adbc_pg.connect(conninfo(cfg.url, cfg.connect_timeout_s)) as conn:
            with conn.cursor() as cur:
                cur.execute(_select(cfg, "event_id", "LIMIT 0"))
                schema = cur.fetch_arrow_table().schema
                id_type, time_type = (_pg_type(f) for f in schema)
                id_kind(schema.field("event_id").type, cfg.id, describe(cfg), id_type)
                kind = time_kind(
                    schema.field("stage_time").type,
                    cfg.time,
                    describe(cfg),
                    cfg.time_unit,
                    time_type,
                )
                # char(n) pads with blanks that are no part of the value: its text drops them.
                id_expr = "event_id::text" if id_type == "bpchar" else "event_id"
                only = ""
                if shard is not None and id_type in _TEXT_IDS and kind != "text":
                    cur.execute("SELECT current_setting('server_encoding')")
                    if cur.fetch_arrow_table().column(0)[0].as_py() == "UTF8":
                        only = f"WHERE {sql_predicate('event_id::text', shard)}"
                timeless = []
                if cfg.table is not None:
                    timeless = _null_times(cur, cfg.table, cfg.time)
                    # Every row of a time range is read: a bitmap heap scan visits each
                    # page once, a plain index scan once per row. A query's own plan is
                    # left alone.
                    cur.execute("SET enable_indexscan = off")
                # The bounds are literals, not parameters: ADBC streams a query without
                # parameters as binary COPY, but holds a parameterised one's whole result
                # in libpq.
                where = f"WHERE {_time_filter(cfg, kind, window)}"
                cur.execute(_select(cfg, id_expr, where, only))
                table = cur.fetch_arrow_table()
            conn.rollback()  # read only: nothing to keep
    except adbc_driver_manager.Error as exc:
        raise SourceError(f"{describe(cfg)}: {str(exc).strip()}") from exc
    read = _ledger(cfg, table, window, id_type, time_type)
    read.bad_records.extend(timeless)
    return read


def _select(cfg: Config, id_expr: str, where: str, outer: str = "") -> str:
    """The ID (as `id_expr` makes it of the column `event_id`) and time of the rows `where`.

    `outer` filters on the inner query's `event_id` and `stage_time` (a shard's hash).
    """
    # PostgreSQL flattens the inner query: `where` and `outer` still filter the relation
    # in place.
    return (
        f"SELECT {id_expr} AS event_id, stage_time FROM (SELECT {_quoted(cfg.id)} AS event_id, "
        f"{_quoted(cfg.time)} AS stage_time FROM {_relation(cfg)} {where}) AS recon_rows {outer}"
    )


# ISO 8601 text that DuckDB's TIMESTAMPTZ cast (`utc_times`) always reads, once its day
# of the month exists: YYYY-MM-DD, optionally [T ]HH:MM[:SS[.f{1,9}]] and an offset of
# under 15 hours. Its first ten characters are the day of its wall time.
_ISO_TEXT = (
    "^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,9})?)?"
    "(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?)?$"
)


def _time_filter(cfg: Config, kind: TimeKind, window: Window) -> str:
    """A WHERE condition for the rows of `window`, on the time column's own encoding.

    Exact for timestamps and integers (bounds in the column's type: wall times in
    `timezone`, epochs in `time_unit`). For text it keeps a superset: ISO 8601 text
    (`_ISO_TEXT`, on a day that exists) whose day is within one of the window's, an
    epoch of digits in it (with `time_unit`), and every other non-NULL text, so that
    text which is no time is read and counted unreadable; `_ledger` keeps the exact
    rows once it has read the times.
    """
    t = _quoted(cfg.time)
    bounds = (window.start, window.end)
    if kind == "instant":
        lo, hi = (f"TIMESTAMPTZ '{b.astimezone(UTC).isoformat()}'" for b in bounds)
    elif kind == "wall":
        lo, hi = (f"TIMESTAMP '{wall_bound(b, cfg.timezone).isoformat()}'" for b in bounds)
    elif kind == "epoch":
        lo, hi = (str(unit_bound(epoch_us(b), cfg.time_unit or "s")) for b in bounds)
    else:
        return _text_filter(cfg, window)
    return f"{t} >= {lo} AND {t} < {hi}"


def _text_filter(cfg: Config, window: Window) -> str:
    """`_time_filter` for a text column (see there); every literal is ours."""
    t = _quoted(cfg.time)
    # A time in [start, end) with an offset of under 15 hours is on a wall-clock day from
    # the day before the start's to the day after the end's.
    first = (window.start.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    after = (window.end.astimezone(UTC) + timedelta(days=2)).date().isoformat()
    day = f"substr({t}, 9, 2)::int"
    month_end = (
        f"extract(day from make_date(substr({t}, 1, 4)::int, substr({t}, 6, 2)::int, 1) "
        "+ interval '1 month' - interval '1 day')"
    )
    # CASE, not AND: PostgreSQL evaluates a CASE's branches in order, so the casts only
    # see text the patterns have vouched for.
    epoch = ""
    if cfg.time_unit is not None:
        lo, hi = (str(unit_bound(epoch_us(b), cfg.time_unit)) for b in (window.start, window.end))
        epoch = f"WHEN {t} ~ '^-?[0-9]+$' THEN {t}::numeric >= {lo} AND {t}::numeric < {hi} "
    return (
        f"{t} IS NOT NULL AND CASE "
        f"WHEN {t} ~ '{_ISO_TEXT}' THEN CASE WHEN {day} <= {month_end} "
        f"""THEN {t} COLLATE "C" >= '{first}' AND {t} COLLATE "C" < '{after}' ELSE true END """
        f"{epoch}ELSE true END"
    )


def _null_times(cur: Any, table: str, time: str) -> list[BadRecord]:
    """The table's rows with a NULL time, which no window holds: counted, not dropped.

    A NOT NULL column is not counted (the catalog says so); a nullable one is,
    through its index on the time column when there is one (it holds NULLs).
    """
    relation, column = _quoted(table), _quoted(time)
    cur.execute(
        f"SELECT CASE WHEN a.attnotnull THEN 0 "
        f"ELSE (SELECT count(*) FROM {relation} WHERE {column} IS NULL) END "
        f"FROM pg_attribute a WHERE a.attrelid = {_text(relation)}::regclass "
        f"AND a.attname = {_text(time)}"
    )
    found = cur.fetch_arrow_table().column(0).to_pylist()
    n = int(found[0]) if found else 0
    if not n:
        return []
    return [BadRecord(f"{table} ({n} rows)", f"{time} is NULL: in no window", count=n)]


def _text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _ledger(
    cfg: Config, table: pa.Table, window: Window, id_type: str, time_type: str
) -> LedgerRead:
    """The rows read as a ledger; text that is no time is unreadable.

    Such a row is in no window (time None), named by its table and ID; rows
    outside `window` (read by a text column's wider filter) are dropped.
    """
    where = cfg.table or "query"
    times, unparsed = utc_times(
        table["stage_time"], cfg.time, describe(cfg), cfg.timezone, cfg.time_unit, time_type
    )
    bad = []
    if unparsed is not None:
        rows = table.filter(unparsed)
        ids, _ = canonical_ids(rows["event_id"], cfg.id, describe(cfg), type_name=id_type)
        bad = [
            BadRecord(
                f"{where} row {cfg.id}={'NULL' if i is None else shown(i)}",
                f"bad {cfg.time}: {shown(raw)}",
            )
            for i, raw in zip(ids.to_pylist(), rows["stage_time"].to_pylist(), strict=True)
        ]
    keep = in_window(times, window)
    if not pc.all(keep).as_py():
        table, times = table.filter(keep), times.filter(keep)
    ids, valid, id_bad = usable_rows(
        table["event_id"], times, where, cfg.id, null="NULL", type_name=id_type
    )
    if valid is not None:
        ids, times = ids.filter(valid), times.filter(valid)
    return LedgerRead(describe(cfg), ledger_table(ids, times, where), bad + id_bad)


def count_many(cfg: Config, windows: list[Window]) -> list[int]:
    """Rows in each window: one `count(*)` per window, over two connections.

    Index range scans per window beat one scan of the whole span bucketed by
    window; two connections with one backend each halve that again, where
    PostgreSQL's own parallel scans of a window's range cost more to start than
    they save. A text
    time column is read once over the windows' span and its times counted here.
    """

    def counts(part: list[Window]) -> list[int]:
        with psycopg.connect(conninfo(cfg.url, cfg.connect_timeout_s)) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                cur.execute("SET max_parallel_workers_per_gather = 0")
                kind = _time_kind(cur, cfg)
                if kind == "text":
                    return _count_text(cfg, part)
                out = []
                for w in part:
                    # Bounds as literals, not parameters: with parameters psycopg reads
                    # every % of a configured query (LIKE '/hook/%') as a placeholder.
                    where = _time_filter(cfg, kind, w)
                    cur.execute(f"SELECT count(*) FROM {_relation(cfg)} WHERE {where}")
                    out.append(int(cur.fetchall()[0][0]))
                return out

    half = len(windows) // 2
    parts = [p for p in (windows[:half], windows[half:]) if p]
    try:
        with ThreadPoolExecutor(2) as pool:
            return [n for part in pool.map(counts, parts) for n in part]
    except psycopg.Error as exc:
        raise SourceError(f"{describe(cfg)}: {str(exc).strip()}") from exc


def _time_kind(cur: psycopg.Cursor, cfg: Config) -> TimeKind:
    """The time column's kind, from its PostgreSQL type, judged as `read` judges it."""
    cur.execute(f"SELECT {_quoted(cfg.time)} FROM {_relation(cfg)} LIMIT 0")
    oid = int(cur.description[0].type_code) if cur.description else 0
    cur.execute(f"SELECT typname FROM pg_type WHERE oid = {oid}")
    found = cur.fetchall()
    name = str(found[0][0]) if found else f"type {oid}"
    typ = _PG_TIME_TYPES.get(name, pa.null())
    return time_kind(typ, cfg.time, describe(cfg), cfg.time_unit, name)


def _count_text(cfg: Config, windows: list[Window]) -> list[int]:
    """Rows per window of a text time column: its times over the span, read and counted."""
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as adbc_pg

    span = Window(min(w.start for w in windows), max(w.end for w in windows))
    try:
        with adbc_pg.connect(conninfo(cfg.url, cfg.connect_timeout_s)) as conn:
            with conn.cursor() as cur:
                cur.execute(_select(cfg, "NULL", f"WHERE {_text_filter(cfg, span)}"))
                values = cur.fetch_arrow_table()["stage_time"]
            conn.rollback()
    except adbc_driver_manager.Error as exc:
        raise SourceError(f"{describe(cfg)}: {str(exc).strip()}") from exc
    times, _ = utc_times(values, cfg.time, describe(cfg), cfg.timezone, cfg.time_unit)
    us = np.sort(np.asarray(times.drop_null().cast(pa.int64())))
    return [
        int(np.searchsorted(us, epoch_us(w.end)) - np.searchsorted(us, epoch_us(w.start)))
        for w in windows
    ]


KIND = Kind("sql", Config, read, count_many=count_many, exact_ranges=True, read_shard=read_shard)
