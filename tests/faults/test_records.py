"""1,100 generated hostile records across the source kinds: each read exactly or named.

Every record is planted with what it must become: a usable event (its ID read
exactly) or an unreadable row named by its place (file:line, topic[partition]@offset,
the table or the parquet file). Never a traceback, never a record dropped unseen,
never a hostile record read as an event.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from recon.simulate.plant import create_topic
from recon.sources import files, kafka, parquet, sql

from ..helpers import W
from ..test_kafka_reader import _produce

RNG_SEED = 19
IN_WINDOW = [W.start + timedelta(seconds=s) for s in range(0, 3600, 7)]


def _when(rng: random.Random) -> str:
    return rng.choice(IN_WINDOW).isoformat()


# JSON lines: (line bytes, the ID it must read as, or None when it must be unreadable).
def _jsonl(rng: random.Random, n: int) -> list[tuple[bytes, str | None]]:
    t = _when(rng)
    hostile: list[bytes] = [
        b"{not json",
        b"[1, 2, 3]",
        b'"just a string"',
        b"42",
        b"null",
        json.dumps({"received_at": t}).encode(),
        json.dumps({"event_id": None, "received_at": t}).encode(),
        json.dumps({"event_id": "", "received_at": t}).encode(),
        json.dumps({"event_id": 1.5, "received_at": t}).encode(),
        json.dumps({"event_id": [1], "received_at": t}).encode(),
        json.dumps({"event_id": {"a": 1}, "received_at": t}).encode(),
        json.dumps({"event_id": True, "received_at": t}).encode(),
        json.dumps({"event_id": "a\x00b", "received_at": t}).encode(),
        b'{"event_id": "bad \xff\xfe utf8", "received_at": "' + t.encode() + b'"}',
        json.dumps({"event_id": "x", "received_at": "not a time"}).encode(),
        json.dumps({"event_id": "x", "received_at": None}).encode(),
        json.dumps({"event_id": "x"}).encode(),
        json.dumps({"event_id": "x", "received_at": "2026-13-45T99:99:99Z"}).encode(),
        b'{"event_id": "x", "received_at": "' + t.encode() + b'"',  # cut short
    ]
    out: list[tuple[bytes, str | None]] = []
    for i in range(n):
        if rng.random() < 0.6:
            out.append((rng.choice(hostile), None))
        else:
            event = rng.choice([f"v{i}", f"V-{i}-ünï", f"{i}", f"  spaced {i} ", f"'{i}'; --"])
            out.append((json.dumps({"event_id": event, "received_at": _when(rng)}).encode(), event))
    return out


def test_hostile_json_lines_are_each_read_or_named(tmp_path: Path) -> None:
    rng = random.Random(RNG_SEED)
    lines = _jsonl(rng, 400)
    log = tmp_path / "gw.jsonl"
    log.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    read = files.read(files.Config(name="gw", source="files", path=str(log)), W)
    want = sorted(e for _, e in lines if e is not None)
    assert sorted(read.table["event_id"].to_pylist()) == want
    bad_lines = sorted(int(b.where.rsplit(":", 1)[1]) for b in read.bad_records)
    assert bad_lines == [i + 1 for i, (_, e) in enumerate(lines) if e is None]
    assert read.unreadable == sum(1 for _, e in lines if e is None) > 200


def test_hostile_csv_rows_are_each_read_or_named(tmp_path: Path) -> None:
    rng = random.Random(RNG_SEED + 1)
    rows: list[tuple[str, str | None]] = []
    for i in range(200):
        t = _when(rng)
        kind = rng.randrange(7)
        if kind == 0:
            rows.append((f"c{i},{t},extra", None))  # a field too many
        elif kind == 1:
            rows.append((f"c{i}", None))  # a field too few
        elif kind == 2:
            rows.append((f'"c{i},{t}', None))  # an unterminated quote
        elif kind == 3:
            rows.append((f",{t}", None))  # no ID
        elif kind == 4:
            rows.append((f"c{i},yesterday", None))  # no time
        elif kind == 5:
            rows.append((f'"c,{i}",{t}', f"c,{i}"))  # a quoted comma: a good row
        else:
            rows.append((f"c{i},{t}", f"c{i}"))
    log = tmp_path / "gw.csv"
    log.write_text("event_id,received_at\n" + "".join(r + "\n" for r, _ in rows))
    read = files.read(files.Config(name="gw", source="files", path=str(log)), W)
    assert sorted(read.table["event_id"].to_pylist()) == sorted(e for _, e in rows if e)
    bad_lines = sorted(int(b.where.rsplit(":", 1)[1]) for b in read.bad_records)
    assert bad_lines == [i + 2 for i, (_, e) in enumerate(rows) if e is None]


def test_hostile_kafka_records_are_each_read_or_named(bootstrap: str, unique: str) -> None:
    """300 records of one partition: keys missing, empty, not UTF-8 or holding NUL, and
    JSON values not JSON, without the field, or with a field of the wrong kind."""
    rng = random.Random(RNG_SEED + 2)
    by_key, by_json = [], []
    for i in range(150):
        t = rng.choice(IN_WINDOW).strftime("%H:%M:%S")
        key = rng.choice([None, b"", b"\xff\xfe", b"a\x00b", f"k{i}".encode(), f"k{i}".encode()])
        good = key is not None and key.startswith(b"k")
        by_key.append(({"key": key, "t": t}, key.decode() if good else None))
        value, event = rng.choice(
            [
                (b"{not json", None),
                (json.dumps({"other": 1}).encode(), None),
                (json.dumps({"meta": {"id": [1]}}).encode(), None),
                (json.dumps({"meta": {"id": None}}).encode(), None),
                (json.dumps({"meta": {"id": ""}}).encode(), None),
                (json.dumps({"meta": {"id": f"j{i}"}}).encode(), f"j{i}"),
                (json.dumps({"meta": {"id": i}}).encode(), str(i)),
            ]
        )
        by_json.append(({"value": value, "t": t}, event))
    for suffix, records, id_spec in (("k", by_key, "key"), ("j", by_json, "json:meta.id")):
        topic = f"{unique}{suffix}"
        create_topic(bootstrap, topic, 1)
        _produce(bootstrap, topic, [r for r, _ in records])
        cfg = kafka.Config(name="bus", source="kafka", bootstrap=bootstrap, topic=topic, id=id_spec)
        read = kafka.read(cfg, W)
        assert sorted(read.table["event_id"].to_pylist()) == sorted(e for _, e in records if e)
        named = sorted(int(b.where.rsplit("@", 1)[1]) for b in read.bad_records)
        assert named == [i for i, (_, e) in enumerate(records) if e is None]


def test_hostile_parquet_and_sql_rows_are_each_read_or_counted(
    tmp_path: Path, pg_url: str, unique: str
) -> None:
    """100 parquet rows and 100 table rows: IDs null, empty or holding NUL (parquet), null
    times; the others are read exactly, the hostile ones counted."""
    rng = random.Random(RNG_SEED + 3)
    ids, times, good = [], [], []
    for i in range(100):
        event = rng.choice([None, "", "a\x00b", f"p{i}", f"p{i}", f"p{i}"])
        when = None if rng.random() < 0.2 else rng.choice(IN_WINDOW)
        ids.append(event)
        times.append(when)
        if event and "\x00" not in event and when is not None:
            good.append(event)
    lake = tmp_path / "lake" / "dt=2026-11-20"
    lake.mkdir(parents=True)
    pq.write_table(
        pa.table({"event_id": ids, "ingested_at": pa.array(times, pa.timestamp("us", tz="UTC"))}),
        lake / "part-0.parquet",
    )
    cfg = parquet.Config(name="lake", source="parquet", path=str(tmp_path / "lake"))
    # The window that holds the partition's start (midnight) counts the null times.
    day = W.__class__(W.start.replace(hour=0), W.start.replace(hour=0) + timedelta(days=1))
    read = parquet.read(cfg, day)
    assert sorted(read.table["event_id"].to_pylist()) == sorted(good)
    assert read.unreadable == 100 - len(good)

    rows, good = [], []
    for i in range(100):
        event = rng.choice([None, "", f"s{i}", f"s{i}", f"s{i}"])
        when = None if rng.random() < 0.2 else rng.choice(IN_WINDOW)
        rows.append((event, when))
        if event and when is not None:
            good.append(event)
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {unique} (event_id text, received_at timestamptz)")
        with conn.cursor().copy(f"COPY {unique} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    table = sql.Config(name="gw", source="sql", url=pg_url, table=unique)
    read = sql.read(table, W)
    assert sorted(read.table["event_id"].to_pylist()) == sorted(good)
    no_id = sum(1 for e, t in rows if not e and t is not None)
    no_time = sum(1 for _, t in rows if t is None)
    assert read.unreadable == no_id + no_time
