"""A run over sources of different encodings: a PostgreSQL uuid origin with wall-clock
times, and a lake of string IDs with epoch-millisecond times, reconcile exactly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from recon.config import parse_config
from recon.engine.reconcile import reconcile_windows
from recon.sources.sql import conninfo
from recon.timeutil import epoch_ms

from .helpers import W, at

LOST = {7, 23, 41}


def test_a_uuid_origin_and_a_lake_of_string_ids_reconcile_to_the_planted_loss(
    tmp_path: Path, pg_url: str, unique: str
) -> None:
    """60 events e_i (uuid5 of i), one a minute from 10:00 UTC. Receipts: a PostgreSQL
    table with a uuid ID column and a `timestamp` column of Paris wall times (11:00-11:59,
    timezone Europe/Paris). Lake: 57 of them (not e_7, e_23, e_41), IDs as the lowercase
    strings str(uuid), times as int64 epoch ms (time_unit ms) a minute after the receipt,
    under dt=/hour=. Window [10:00, 11:00): cohort 60, lake arrived 57, lost exactly 3 (the
    planted three), no orphans, nothing unreadable."""
    events = {i: uuid.uuid5(uuid.NAMESPACE_URL, f"event-{i}") for i in range(60)}
    received = {i: at("10:00:00") + timedelta(minutes=i) for i in events}
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {unique} (event_id uuid, received_at timestamp)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {unique} VALUES (%s, %s)",
                [
                    (u, (received[i] + timedelta(hours=1)).replace(tzinfo=None))
                    for i, u in events.items()
                ],
            )
    lake = tmp_path / "lake"
    for hour in (10, 11):
        kept = [
            i for i in events if i not in LOST and (received[i] + timedelta(minutes=1)).hour == hour
        ]
        part = lake / f"dt=2026-11-20/hour={hour}"
        part.mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "event_id": [str(events[i]) for i in kept],
                    "ingested_at": pa.array(
                        [epoch_ms(received[i] + timedelta(minutes=1)) for i in kept], pa.int64()
                    ),
                }
            ),
            part / "part-0.parquet",
        )
    cfg = parse_config(
        {
            "pipeline": unique,
            "stages": [
                {
                    "name": "webhook",
                    "source": "sql",
                    "url": pg_url,
                    "table": unique,
                    "timezone": "Europe/Paris",
                },
                {"name": "lake", "source": "parquet", "path": str(lake), "time_unit": "ms"},
            ],
        }
    )
    (result,) = reconcile_windows(cfg, [W], now=W.end + timedelta(hours=3))
    assert (result.events, result.error) == (60, None)
    webhook, hop = result.stages
    assert (webhook.upstream, webhook.unreadable, webhook.orphans) == (60, 0, 0)
    assert (hop.upstream, hop.arrived, hop.lost, hop.orphans, hop.unreadable) == (60, 57, 3, 0, 0)
    missing = result.missing.to_pylist()
    assert sorted((m["event_id"], m["stage"], m["outcome"]) for m in missing) == sorted(
        (str(events[i]), "lake", "lost") for i in LOST
    )
