"""`sql` reader: every time encoding (timestamptz, naive in a zone, epoch integers, ISO
text) and ID type (uuid, integer, bytea) against the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from recon.errors import SourceError
from recon.model import Window
from recon.sources import sql
from recon.sources.sql import conninfo
from recon.timeutil import epoch_ms

from .helpers import W, at


def _table(pg_url: str, name: str, columns: str, rows: list[tuple]) -> None:
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {name} ({columns})")
        if rows:
            marks = ", ".join(["%s"] * len(rows[0]))
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


def _cfg(pg_url: str, table: str, **options: object) -> sql.Config:
    return sql.Config(name="webhook", source="sql", url=pg_url, table=table, **options)


def _iso(t: datetime) -> str:
    """On the hour with Z, at :30 without an offset, else in +02:00."""
    if t.minute == 0:
        return t.isoformat().replace("+00:00", "Z")
    if t.minute == 30:
        return t.replace(tzinfo=None).isoformat(sep=" ")
    return (t + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")


HOURS = Window(at("09:00:00"), at("12:00:00")).split(timedelta(hours=1))
# The same five instants in each encoding: a (09:59:59.999, out), b (10:00, in),
# c (10:30:00.123, in), d (10:59:59.999, in), e (11:00, out).
INSTANTS = {
    "a": at("09:59:59.999"),
    "b": at("10:00:00"),
    "c": at("10:30:00.123"),
    "d": at("10:59:59.999"),
    "e": at("11:00:00"),
}
ENCODINGS = {
    "timestamptz": ("timestamptz", {}, lambda t: t),
    # Wall times in Paris, an hour ahead of UTC in November.
    "timestamp": (
        "timestamp",
        {"timezone": "Europe/Paris"},
        lambda t: (t + timedelta(hours=1)).replace(tzinfo=None),
    ),
    "bigint ms": ("bigint", {"time_unit": "ms"}, epoch_ms),
    "integer s": ("integer", {"time_unit": "s"}, lambda t: epoch_ms(t) // 1000),
    # Text with an offset, with Z, and without one (read in the source's zone, UTC here).
    "text": ("text", {}, lambda t: _iso(t)),
    "text epoch ms": ("varchar(20)", {"time_unit": "ms"}, lambda t: str(epoch_ms(t))),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_time_encoding_reads_and_counts_exactly_the_window(
    pg_url: str, unique: str, encoding: str
) -> None:
    """a-e planted with the column type and config of `encoding`. The read of [10:00, 11:00)
    holds exactly b, c and d at their instants; the counts of 09:00-12:00 by hour are
    1 (a), 3 (b c d), 1 (e). The integer seconds column floors c and d to their second."""
    column_type, options, encode = ENCODINGS[encoding]
    rows = [(i, encode(t)) for i, t in INSTANTS.items()]
    _table(pg_url, unique, f"event_id text, received_at {column_type}", rows)
    cfg = _cfg(pg_url, unique, **options)
    read = sql.read(cfg, W)
    expected = {i: INSTANTS[i] for i in "bcd"}
    if encoding == "integer s":
        expected = {i: t.replace(microsecond=0) for i, t in expected.items()}
    got = dict(zip(*(read.table[c].to_pylist() for c in ("event_id", "stage_time")), strict=True))
    assert got == expected
    assert read.bad_records == []
    assert sql.count_many(cfg, HOURS) == [1, 3, 1]


def test_naive_wall_times_around_both_changes_of_the_clocks(pg_url: str, unique: str) -> None:
    """Europe/Paris wall times on 2026-10-25, when 03:00 CEST became 02:00 CET (01:00 UTC):
    a 01:59:59 (CEST, 23:59:59 UTC the day before), b 02:30 and c 02:59:59.999999 (in the
    repeated hour: its first occurrence, CEST, 00:30 and 00:59:59.999999 UTC), d 03:00 (CET,
    02:00 UTC). And on 2026-03-29, when 02:00 CET became 03:00 CEST (01:00 UTC): e 02:30
    never happened (read as the jump, 01:00 UTC), f 03:00 CEST (also 01:00 UTC).

    Hourly windows from 23:00 UTC: a | b c | nothing | d; and 00:00-01:00 on 03-29 is empty,
    01:00-02:00 holds e and f. The bounds sent to PostgreSQL are wall times, so each read
    and count holds exactly these, and the same text without an offset reads alike."""
    walls = {
        "a": "2026-10-25 01:59:59",
        "b": "2026-10-25 02:30:00",
        "c": "2026-10-25 02:59:59.999999",
        "d": "2026-10-25 03:00:00",
        "e": "2026-03-29 02:30:00",
        "f": "2026-03-29 03:00:00",
    }
    fall = datetime(2026, 10, 24, 23, tzinfo=UTC)
    spring = datetime(2026, 3, 29, tzinfo=UTC)
    windows = [*Window(fall, fall + timedelta(hours=4)).split(timedelta(hours=1))]
    windows += Window(spring, spring + timedelta(hours=2)).split(timedelta(hours=1))
    expected = [
        {"a": datetime(2026, 10, 24, 23, 59, 59, tzinfo=UTC)},
        {
            "b": datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
            "c": datetime(2026, 10, 25, 0, 59, 59, 999999, tzinfo=UTC),
        },
        {},
        {"d": datetime(2026, 10, 25, 2, tzinfo=UTC)},
        {},
        {"e": datetime(2026, 3, 29, 1, tzinfo=UTC), "f": datetime(2026, 3, 29, 1, tzinfo=UTC)},
    ]
    for column_type in ("timestamp", "text"):
        table = f"{unique}_{column_type}"
        _table(pg_url, table, f"event_id text, received_at {column_type}", list(walls.items()))
        cfg = _cfg(pg_url, table, timezone="Europe/Paris")
        for window, want in zip(windows, expected, strict=True):
            read = sql.read(cfg, window)
            got = dict(
                zip(*(read.table[c].to_pylist() for c in ("event_id", "stage_time")), strict=True)
            )
            assert got == want, (column_type, str(window))
        assert sql.count_many(cfg, windows) == [1, 2, 0, 1, 0, 2], column_type


def test_text_times_that_are_no_time_are_unreadable_by_table_and_id(
    pg_url: str, unique: str
) -> None:
    """A text time column holding: ok1 (10:05Z, in), ok2 ("2026-11-20 10:10", no offset: UTC,
    in), far ("2026-11-25T10:00:00Z", a valid time 5 days on: never read by this window),
    late (11:00Z, out), and five values that are no time: "garbage", "" (empty), "2026-02-30"
    (no such day), "1795168800000" (digits, no time_unit) and "10:00" (no date); one NULL.

    The read holds ok1 and ok2; each of the five is unreadable, named by the table and its
    ID with its raw text, with no time (in no window); the NULL is one record. The count of
    W is the 2 rows, of the hour after it 1 (late)."""
    rows = [
        ("ok1", "2026-11-20T10:05:00Z"),
        ("ok2", "2026-11-20 10:10"),
        ("far", "2026-11-25T10:00:00Z"),
        ("late", "2026-11-20T11:00:00Z"),
        ("g1", "garbage"),
        ("g2", ""),
        ("g3", "2026-02-30"),
        ("g4", "1795168800000"),
        ("g5", "10:00"),
        ("n1", None),
    ]
    _table(pg_url, unique, "event_id text, received_at text", rows)
    cfg = _cfg(pg_url, unique)
    read = sql.read(cfg, W)
    assert read.table["event_id"].to_pylist() == ["ok1", "ok2"]
    assert read.table["stage_time"].to_pylist() == [at("10:05:00"), at("10:10:00")]
    assert sorted((b.where, b.reason, b.count, b.time) for b in read.bad_records) == [
        (f"{unique} (1 rows)", "received_at is NULL: in no window", 1, None),
        (f"{unique} row event_id='g1'", "bad received_at: 'garbage'", 1, None),
        (f"{unique} row event_id='g2'", "bad received_at: ''", 1, None),
        (f"{unique} row event_id='g3'", "bad received_at: '2026-02-30'", 1, None),
        (f"{unique} row event_id='g4'", "bad received_at: '1795168800000'", 1, None),
        (f"{unique} row event_id='g5'", "bad received_at: '10:00'", 1, None),
    ]
    assert sql.count_many(cfg, [W, Window(W.end, at("12:00:00"))]) == [2, 1]
    # PostgreSQL's own filter keeps a superset: every row but `far` (and the NULL).
    with psycopg.connect(conninfo(pg_url)) as conn:
        kept = conn.execute(
            f"SELECT event_id FROM {unique} WHERE {sql._text_filter(cfg, W)} ORDER BY 1"
        ).fetchall()
    assert [k for (k,) in kept] == ["g1", "g2", "g3", "g4", "g5", "late", "ok1", "ok2"]


def test_integer_time_without_time_unit_and_other_types_are_errors(
    pg_url: str, unique: str
) -> None:
    """A bigint time column without time_unit names the table, column and type and says to
    set time_unit (read and count alike); a boolean one names its type."""
    _table(pg_url, unique, "event_id text, ts bigint, flag boolean", [("a", 1, True)])
    epoch = _cfg(pg_url, unique, time="ts")
    message = rf"sql {unique} @ .*: time column 'ts' is int8: .*set time_unit"
    with pytest.raises(SourceError, match=message):
        sql.read(epoch, W)
    with pytest.raises(SourceError, match=message):
        sql.count_many(epoch, [W])
    with pytest.raises(SourceError, match=r"time column 'flag' is bool: it must be a timestamp"):
        sql.read(_cfg(pg_url, unique, time="flag"), W)


def test_uuid_integer_and_bytea_ids_in_one_text_form(pg_url: str, unique: str) -> None:
    """A uuid column (inserted in upper case) reads as lowercase hyphenated text; a bigint
    as decimal; a bytea as its UTF-8 text, where b'\\xff' is unreadable (not UTF-8) and an
    empty one unreadable (empty), each named by its time. A char(8) ID loses its padding;
    a float ID column is an error naming the table, column and type."""
    u1, u2 = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "00000000-0000-0000-0000-0000000000FF"
    _table(
        pg_url,
        unique,
        "u uuid, n bigint, b bytea, c char(8), f float8, received_at timestamptz",
        [
            (u1, 42, b"caf\xc3\xa9", "ab", 1.5, at("10:01:00")),
            (u2, -7, b"\xff", "cd", 2.5, at("10:02:00")),
            (None, 9007199254740993, b"", "ef", 3.5, at("10:03:00")),
        ],
    )
    uuids = sql.read(_cfg(pg_url, unique, id="u"), W)
    assert uuids.table["event_id"].to_pylist() == [u1.lower(), u2.lower()]
    assert [(b.where, b.reason) for b in uuids.bad_records] == [
        (f"{unique} row at 2026-11-20T10:03:00Z", "u is NULL")
    ]
    numbers = sql.read(_cfg(pg_url, unique, id="n"), W)
    assert numbers.table["event_id"].to_pylist() == ["42", "-7", "9007199254740993"]
    raw = sql.read(_cfg(pg_url, unique, id="b"), W)
    assert raw.table["event_id"].to_pylist() == ["café"]
    assert [(b.where, b.reason, b.time) for b in raw.bad_records] == [
        (f"{unique} row at 2026-11-20T10:02:00Z", "b is not valid UTF-8", at("10:02:00")),
        (f"{unique} row at 2026-11-20T10:03:00Z", "b is empty", at("10:03:00")),
    ]
    padded = sql.read(_cfg(pg_url, unique, id="c"), W)
    assert padded.table["event_id"].to_pylist() == ["ab", "cd", "ef"]
    with pytest.raises(SourceError, match=rf"{unique} @ .*: ID column 'f' is float8"):
        sql.read(_cfg(pg_url, unique, id="f"), W)


def test_a_query_source_with_an_epoch_time_filters_in_postgresql(pg_url: str, unique: str) -> None:
    """A query whose time is an expression (epoch ms in a bigint column): read and count of
    W hold b and c only, the same as the table would."""
    rows = [("a", epoch_ms(at("09:00:00"))), ("b", epoch_ms(at("10:00:00")))]
    rows += [("c", epoch_ms(at("10:59:59.999"))), ("d", epoch_ms(at("11:00:00")))]
    _table(pg_url, unique, "event_id text, ms bigint", rows)
    cfg = sql.Config(
        name="q",
        source="sql",
        url=pg_url,
        query=f"SELECT event_id, ms AS received_at FROM {unique}",
        time_unit="ms",
    )
    assert sql.read(cfg, W).table["event_id"].to_pylist() == ["b", "c"]
    assert sql.count_many(cfg, [W]) == [2]
