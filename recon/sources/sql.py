"""`sql` source: a table or query in PostgreSQL, read with COPY into Arrow.

The time filter runs in PostgreSQL; rows cross the wire as CSV from COPY and
are parsed by Arrow's multi-threaded CSV reader, never row by row in Python.
"""

from __future__ import annotations

import io
from typing import Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from pydantic import model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from recon.errors import ConfigError, SourceError
from recon.model import BadRecord, LedgerRead, Window
from recon.sources.base import SourceConfig, ledger_table
from recon.timeutil import iso

KIND = "sql"
_TIMESTAMPTZ_OID = 1184
_TIMESTAMP_OID = 1114


class Config(SourceConfig):
    """A PostgreSQL table (`table`, optionally schema-qualified) or a `query`."""

    source: Literal["sql"]
    url: str
    table: str | None = None
    query: str | None = None
    time: str = "received_at"
    connect_timeout_s: int = 10

    @model_validator(mode="after")
    def _table_or_query(self) -> Config:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


def conninfo(url: str, timeout_s: int = 10) -> str:
    """Libpq connection string for a SQLAlchemy PostgreSQL URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}") from None
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError(f"sql source needs a postgresql URL, got {parsed.drivername}://")
    parts = {
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
    return f"sql {what} @ {make_url(cfg.url).render_as_string(hide_password=True)}"


def _relation(cfg: Config) -> sql.Composable:
    if cfg.table is not None:
        return sql.Identifier(*cfg.table.split("."))
    return sql.SQL("({}) AS recon_q").format(sql.SQL(cfg.query))  # type: ignore[arg-type]


def _time_type(cur: psycopg.Cursor, cfg: Config) -> int:
    cur.execute(
        sql.SQL("SELECT {} FROM {} LIMIT 0").format(sql.Identifier(cfg.time), _relation(cfg))
    )
    oid = cur.description[0].type_code if cur.description else None
    if oid not in (_TIMESTAMPTZ_OID, _TIMESTAMP_OID):
        raise SourceError(
            f"{describe(cfg)}: column {cfg.time!r} must be timestamptz or timestamp (UTC)"
        )
    return oid


def _copy_statement(cfg: Config) -> sql.Composed:
    # extract(epoch) of a naive timestamp is its nominal UTC value, so both
    # column types become exact integer microseconds here.
    return sql.SQL(
        "COPY (SELECT {id}::text, (extract(epoch FROM {t}) * 1000000)::bigint FROM {rel} "
        "WHERE {t} >= %s AND {t} < %s) TO STDOUT (FORMAT csv)"
    ).format(id=sql.Identifier(cfg.id), t=sql.Identifier(cfg.time), rel=_relation(cfg))


def read(cfg: Config, window: Window) -> LedgerRead:
    """Rows of the table/query whose time column is in `window`."""
    buffer = io.BytesIO()
    try:
        with psycopg.connect(conninfo(cfg.url, cfg.connect_timeout_s)) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                naive = _time_type(cur, cfg) == _TIMESTAMP_OID
                bounds = (window.start, window.end)
                if naive:
                    bounds = tuple(b.replace(tzinfo=None) for b in bounds)
                with cur.copy(_copy_statement(cfg), bounds) as copy:
                    for chunk in copy:
                        buffer.write(chunk)
    except psycopg.Error as exc:
        raise SourceError(f"{describe(cfg)}: {str(exc).strip()}") from exc
    table = _parse(buffer.getvalue())
    return _ledger(cfg, table)


def _parse(data: bytes) -> pa.Table:
    names = ["event_id", "us"]
    if not data:
        return pa.table({"event_id": pa.array([], pa.string()), "us": pa.array([], pa.int64())})
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, block_size=64 << 20),
        # COPY csv writes NULL as an empty unquoted field and '' as "".
        convert_options=pacsv.ConvertOptions(
            column_types={"event_id": pa.string(), "us": pa.int64()},
            null_values=[""],
            quoted_strings_can_be_null=False,
            strings_can_be_null=True,
        ),
    )


def _ledger(cfg: Config, table: pa.Table) -> LedgerRead:
    where = cfg.table or "query"
    stage_time = pc.cast(table["us"], pa.timestamp("us", tz="UTC"))
    valid = pc.is_valid(table["event_id"])
    bad = [
        BadRecord(f"{where} row at {iso(t)}", f"{cfg.id} is NULL", time=t)
        for t in stage_time.filter(pc.invert(valid)).to_pylist()
    ]
    if bad:
        table, stage_time = table.filter(valid), stage_time.filter(valid)
    return LedgerRead(describe(cfg), ledger_table(table["event_id"], stage_time, where), bad)


def count(cfg: Config, window: Window) -> int:
    """Rows in `window`, counted by PostgreSQL (no rows cross the wire)."""
    try:
        with psycopg.connect(conninfo(cfg.url, cfg.connect_timeout_s)) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                bounds: tuple = (window.start, window.end)
                if _time_type(cur, cfg) == _TIMESTAMP_OID:
                    bounds = tuple(b.replace(tzinfo=None) for b in bounds)
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {rel} WHERE {t} >= %s AND {t} < %s").format(
                        rel=_relation(cfg), t=sql.Identifier(cfg.time)
                    ),
                    bounds,
                )
                return int(cur.fetchall()[0][0])
    except psycopg.Error as exc:
        raise SourceError(f"{describe(cfg)}: {str(exc).strip()}") from exc
