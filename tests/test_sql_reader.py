"""`sql` reader against the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from recon.errors import SourceError
from recon.model import Window
from recon.sources import sql
from recon.sources.sql import conninfo

from .helpers import W, at


def _table(pg_url: str, name: str, column_type: str, rows: list[tuple]) -> None:
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {name} (event_id text, received_at {column_type})")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {name} VALUES (%s, %s)", rows)


ROWS = [
    ("before", "2026-11-20 09:59:59.999999"),
    ("at-start", "2026-11-20 10:00:00"),
    ("middle", "2026-11-20 10:30:00.123456"),
    ("dup", "2026-11-20 10:31:00"),
    ("dup", "2026-11-20 10:32:00"),
    (None, "2026-11-20 10:33:00"),
    ("", "2026-11-20 10:34:00"),
    ("at-end", "2026-11-20 11:00:00"),
]


@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp"])
def test_reads_exactly_the_window(pg_url: str, unique: str, column_type: str) -> None:
    """[start, end): the row at start is in, the one at end and the one before are out.

    One NULL id and one empty id are counted as unreadable (as an empty Kafka key or
    CSV field is), not dropped silently; duplicates are kept as rows. A naive
    `timestamp` column is read as UTC.
    """
    rows = [(i, t + ("+00" if column_type == "timestamptz" else "")) for i, t in ROWS]
    _table(pg_url, unique, column_type, rows)
    cfg = sql.Config(name="webhook", source="sql", url=pg_url, table=unique)
    read = sql.read(cfg, W)
    assert read.table.column("event_id").to_pylist() == ["at-start", "middle", "dup", "dup"]
    assert read.table.column("stage_time").to_pylist()[1] == at("10:30:00.123456")
    assert read.unreadable == 2
    assert [b.reason for b in read.bad_records] == ["event_id is NULL", "event_id is empty"]
    assert set(read.table.column("location").to_pylist()) == {unique}


def test_rows_with_a_null_time_are_counted_by_every_read(pg_url: str, unique: str) -> None:
    """Rows b and c have a NULL received_at: no window holds them, so every read of the table
    counts them (one record naming the table, with no time: unreadable in every window)."""
    _table(
        pg_url, unique, "timestamptz", [("a", "2026-11-20 10:10:00+00"), ("b", None), ("c", None)]
    )
    cfg = sql.Config(name="webhook", source="sql", url=pg_url, table=unique)
    read = sql.read(cfg, W)
    assert read.table.column("event_id").to_pylist() == ["a"]
    assert [(b.where, b.reason, b.count, b.time) for b in read.bad_records] == [
        (f"{unique} (2 rows)", "received_at is NULL: in no window", 2, None)
    ]
    assert sql.read(cfg, Window(W.end, W.end + (W.end - W.start))).unreadable == 2


@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp"])
def test_counts_each_window_without_reading_rows(
    pg_url: str, unique: str, column_type: str
) -> None:
    """`count_many` over three windows split across its two connections.

    09:00-10:00 holds `before`; 10:00-11:00 the six rows from `at-start` to the empty
    ID (a count is of rows, so the NULL and empty IDs and both `dup` rows count); 11:00-12:00
    holds `at-end`. A window with no rows counts 0.
    """
    rows = [(i, t + ("+00" if column_type == "timestamptz" else "")) for i, t in ROWS]
    _table(pg_url, unique, column_type, rows)
    cfg = sql.Config(name="webhook", source="sql", url=pg_url, table=unique)
    hours = Window(at("09:00:00"), at("13:00:00")).split(W.end - W.start)
    assert sql.count_many(cfg, hours) == [1, 6, 1, 0]
    assert sql.count_many(cfg, [W]) == [6]


def test_query_source_and_empty_range(pg_url: str, unique: str) -> None:
    _table(pg_url, unique, "timestamptz", [(i, t + "+00") for i, t in ROWS])
    cfg = sql.Config(
        name="w",
        source="sql",
        url=pg_url,
        query=f"SELECT event_id, received_at FROM {unique} WHERE event_id <> 'dup'",
    )
    assert sql.read(cfg, W).table.num_rows == 2
    empty = Window(at("12:00:00"), at("13:00:00"))
    assert sql.read(cfg, empty).table.num_rows == 0
    # A % in the query is the query's own (LIKE), never a placeholder: read and count agree.
    like = cfg.model_copy(
        update={"query": f"SELECT event_id, received_at FROM {unique} WHERE event_id LIKE 'mid%'"}
    )
    assert sql.read(like, W).table.column("event_id").to_pylist() == ["middle"]
    assert sql.count_many(like, [W, empty]) == [1, 0]


def test_missing_table_is_an_error(pg_url: str, unique: str) -> None:
    cfg = sql.Config(name="w", source="sql", url=pg_url, table=unique)
    with pytest.raises(SourceError, match=unique):
        sql.read(cfg, W)


def test_unreachable_server_is_an_error_not_an_empty_table() -> None:
    cfg = sql.Config(
        name="w",
        source="sql",
        url="postgresql+psycopg://recon@127.0.0.1:1/recon",
        table="x",
        connect_timeout_s=2,
    )
    with pytest.raises(SourceError, match=r"127\.0\.0\.1"):
        sql.read(cfg, W)


def test_non_text_ids_are_read_as_text_and_a_non_timestamp_time_is_an_error(
    pg_url: str, unique: str
) -> None:
    """A bigint ID column reads as its decimal text; a date time column is refused by name
    (a time is a timestamp, an integer epoch or ISO 8601 text: test_encodings_sql.py)."""
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {unique} (id bigint, received_at timestamptz, t date)")
        conn.execute(
            f"INSERT INTO {unique} VALUES (42, '2026-11-20 10:00:00+00', '2026-11-20'), "
            "(7, '2026-11-20 11:00:00+00', '2026-11-20')"
        )
    cfg = sql.Config(name="w", source="sql", url=pg_url, table=unique, id="id")
    assert sql.read(cfg, W).table.column("event_id").to_pylist() == ["42"]
    bad = sql.Config(name="w", source="sql", url=pg_url, table=unique, id="id", time="t")
    with pytest.raises(SourceError, match="time column 't' is date: it must be a timestamp"):
        sql.read(bad, W)
