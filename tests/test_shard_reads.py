"""A shard's read of a PostgreSQL table: its hash predicate runs in the server, exactly.

The predicate pushed into PostgreSQL must pick the rows recon's own hash
picks (`sources.sharding`), or rows would be lost: for each ID type, the 4
shards' reads hold each of the window's rows once, and no shard reads the
whole window.
"""

from __future__ import annotations

import psycopg
import pytest

from recon.model import Shard
from recon.sources import read_ledger, sql
from recon.sources.sharding import shard_numbers
from recon.sources.sql import conninfo

from .helpers import W


@pytest.mark.parametrize(
    ("id_type", "value"),
    [
        ("text", "'evt-' || i"),
        ("uuid", "md5(i::text)::uuid"),
        ("bigint", "i * 7919"),
        ("char(12)", "'c' || i"),  # blanks padding it are no part of the ID
    ],
)
def test_four_shards_read_each_row_of_the_window_once(
    pg_url: str, unique: str, id_type: str, value: str
) -> None:
    """300 rows in the window and 200 outside it; for a text ID one NULL and one empty ID
    too (unreadable: counted in shard 0 only). Each shard's read from the server holds
    only its rows (and the two without an ID), and their union is the unsharded read."""
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {unique} (event_id {id_type}, received_at timestamptz)")
        conn.execute(
            f"INSERT INTO {unique} SELECT {value}, "
            f"'2026-11-20 09:30:00+00'::timestamptz + i * interval '12 seconds' "
            f"FROM generate_series(1, 500) i"
        )
        if id_type == "text":
            conn.execute(
                f"INSERT INTO {unique} VALUES (NULL, '2026-11-20 10:20:00+00'), "
                f"('', '2026-11-20 10:21:00+00')"
            )
    cfg = sql.Config(name="webhook", source="sql", url=pg_url, table=unique)
    whole = sql.read(cfg, W)
    assert whole.table.num_rows == 300  # 09:30:12-09:59:48 and 11:00-11:10: outside
    bad = 2 if id_type == "text" else 0
    assert whole.unreadable == bad
    ids: list[str] = []
    for k in range(4):
        shard = Shard(k, 4)
        pushed = sql.read_shard(cfg, W, shard)
        numbers = shard_numbers(pushed.table["event_id"], 4)
        assert set(numbers.tolist()) == {k}, "the server returned another shard's rows"
        assert pushed.unreadable == bad  # rows without an ID reach every shard's read
        kept = read_ledger(cfg, W, shard)
        assert kept.table.equals(pushed.table)
        assert kept.unreadable == (bad if k == 0 else 0)
        ids += kept.table["event_id"].to_pylist()
    assert sorted(ids) == sorted(whole.table["event_id"].to_pylist())
