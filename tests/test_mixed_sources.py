"""`recon run` over a pipeline of every other source kind, planted by hand, event by event.

The planted simulator (`test_run.py`) always builds the same shape: receipts in
PostgreSQL, a keyed topic, a `dt=`/`hour=` lake, a Kafka dead-letter topic. Here the
gateway's log is JSON lines, the bus carries its ID in a JSON field, the warehouse is a
PostgreSQL table with its own column names, one dead-letter sink is a table and the
other a parquet dataset partitioned by `date=`.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recon import api
from recon.cli import main
from recon.simulate.plant import commit_offsets, create_topic

from .helpers import at
from .test_kafka_reader import _produce

# Where each planted event is seen: its gateway receipts, bus records, warehouse rows and
# dead letters (rejected by the bus, or failed at the warehouse), as times on the test day.
GATEWAY = {
    "e01": ["10:05"], "e02": ["10:10", "10:12"], "e03": ["10:15"], "e04": ["10:20"],
    "e05": ["10:25"], "e06": ["10:30"], "e07": ["10:40"], "e08": ["10:50"], "e09": ["10:55"],
    "e10": ["10:58"], "e11": ["11:05"], "e12": ["11:10"], "e13": ["11:20"],
    "e14": ["11:59:59.500"],
}  # fmt: skip
BUS = [  # in offset order; one partition
    ("e01", "10:05:01"), ("e02", "10:10:01"), ("e05", "10:25:01"), ("e06", "10:30:01"),
    ("e07", "10:40:01"), ("e07", "10:40:02"), ("e08", "10:50:01"), ("e10", "10:58:01"),
    ("e11", "11:05:01"), ("e12", "11:10:01"), ("e13", "11:20:01"), ("o1", "11:30:01"),
    (None, "11:40:00"), ("e14", "12:00:00.500"),
]  # fmt: skip
COMMITTED = 9  # the warehouse loader's committed offset: e12 (offset 9) on are in flight
WAREHOUSE = [
    ("e01", "10:06"), ("e02", "10:11"), ("e07", "10:41"), ("e08", "11:20"), ("e09", "10:56"),
    ("e10", "11:45"), ("e11", "11:06"), ("e13", "11:21"), ("e13", "11:21"), ("o1", "11:31"),
    ("e14", "12:01"),
]  # fmt: skip
BUS_REJECTS = [("e04", "10:20:02")]
WAREHOUSE_DEAD = [("e05", "10:26")]


def _t(hm: str) -> object:
    return at(hm if hm.count(":") == 2 else f"{hm}:00")


def _plant(tmp_path: Path, pg_url: str, bootstrap: str, unique: str) -> Path:
    gateway = tmp_path / "gateway"
    gateway.mkdir()
    lines = [
        (t, {"event_id": e, "received_at": _t(t).isoformat()})
        for e, ts in GATEWAY.items()
        for t in ts
    ]
    lines.append(("10:45", {"received_at": _t("10:45").isoformat(), "note": "no event_id"}))
    for name, hour in (("a.jsonl", "10"), ("b.jsonl", "11")):
        mine = sorted((t, row) for t, row in lines if t.startswith(hour))
        (gateway / name).write_text("".join(json.dumps(row) + "\n" for _, row in mine))

    create_topic(bootstrap, unique, 1)
    _produce(
        bootstrap,
        unique,
        [
            {"value": json.dumps({"meta": {"id": e}}).encode() if e else b"{not json", "t": t}
            for e, t in BUS
        ],
    )
    commit_offsets(bootstrap, f"{unique}-loader", unique, {0: COMMITTED})

    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {unique}_wh (eid text, loaded_at timestamptz NOT NULL)")
        conn.execute(f"CREATE TABLE {unique}_rejects (event_id text, rejected_at timestamptz)")
        for e, t in WAREHOUSE:
            conn.execute(f"INSERT INTO {unique}_wh VALUES (%s, %s)", (e, _t(t)))
        for e, t in BUS_REJECTS:
            conn.execute(f"INSERT INTO {unique}_rejects VALUES (%s, %s)", (e, _t(t)))
    dead = tmp_path / "dead" / "date=2026-11-20"
    dead.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "event_id": [e for e, _ in WAREHOUSE_DEAD],
                "failed_at": pa.array(
                    [_t(t) for _, t in WAREHOUSE_DEAD], pa.timestamp("us", tz="UTC")
                ),
            }
        ),
        dead / "part-0.parquet",
    )
    config = {
        "pipeline": unique,
        "window": {"size": "1h", "grace": "30m", "skew": "1m", "settle": "2h"},
        "results": f"sqlite:///{tmp_path / 'results.sqlite'}",
        "stages": [
            {"name": "gateway", "source": "files", "path": str(gateway / "*.jsonl")},
            {
                "name": "bus",
                "source": "kafka",
                "bootstrap": bootstrap,
                "topic": unique,
                "id": "json:meta.id",
                # 1 unreadable of 5 in W2: accepted here, so W2 shows its pending event.
                "thresholds": {"max_unreadable_rate": 0.25},
                "consumer_group": f"{unique}-loader",
            },
            {
                "name": "warehouse",
                "source": "sql",
                "url": pg_url,
                "table": f"{unique}_wh",
                "id": "eid",
                "time": "loaded_at",
            },
        ],
        "dead_letters": [
            {
                "name": "bus_rejects",
                "stage": "bus",
                "source": "sql",
                "url": pg_url,
                "table": f"{unique}_rejects",
                "time": "rejected_at",
            },
            {
                "name": "warehouse_dead",
                "stage": "warehouse",
                "source": "parquet",
                "path": str(tmp_path / "dead"),
                "time": "failed_at",
            },
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_counter_of_a_hand_planted_pipeline(
    tmp_path: Path, pg_url: str, bootstrap: str, unique: str
) -> None:
    """Windows [10:00, 11:00) and [11:00, 12:00), grace 30 m, skew 1 m.

    W1's cohort is e01-e10 (10). gateway: e02 retried (1 duplicate); a receipt at 10:45
    without an event_id (unreadable, in W1 only: the window that holds its time; 1 of the 11
    rows, over the default max_unreadable_rate, a breach by itself).
    bus: e03 vanished (lost); e04 rejected (dead-lettered); e09 never seen on the bus but in
    the warehouse (passed); e07 produced twice (1 duplicate): 8 arrived, 1 lost (10 %).
    warehouse: of those 8, e01 e02 e07 e09 arrived, e08 at 11:20 (late); e05 failed (dead
    letter); e06 and e10 (its row at 11:45 is past the grace) lost, below the committed
    offset: 2 of 8 lost (25 %). End to end 3 of 10 lost: breach.

    W2's cohort is e11-e14 (4). bus: all 4 arrived, e14 at 12:00:00.5 (late); o1 has no
    receipt (orphan); a value that is not JSON at 11:40 (unreadable, 1 of 5: under the bus's
    max_unreadable_rate 0.25). Judged at 13:00, within the stall. warehouse: e11 e13 e14
    arrived, e13 loaded twice (1 duplicate), e14 late; e12 missing but at the committed
    offset (pending); o1 orphan. Nothing lost, one pending: incomplete.
    """
    config = _plant(tmp_path, pg_url, bootstrap, unique)
    out = tmp_path / "run.json"
    code = main(
        ["run", "--config", str(config), "--start", "2026-11-20T10:00:00Z",
         "--end", "2026-11-20T12:00:00Z", "--json", str(out), "--now", "2026-11-20T13:00:00Z"]
    )  # fmt: skip
    assert code == 1
    w1, w2 = json.loads(out.read_text())["windows"]
    keys = ["upstream", "arrived", "lost", "dead_lettered", "pending", "unverifiable"]
    keys += ["late", "duplicates", "orphans", "unreadable"]

    def counters(window: dict) -> dict[str, list[int]]:
        rows = [*window["stages"], window["end_to_end"]]
        return {s["stage"]: [s[k] for k in keys] for s in rows}

    #            upstream arrived lost dead pending unverif late dups orphans unreadable
    assert (w1["status"], w1["events"]) == ("breach", 10)
    assert counters(w1) == {
        "gateway":    [10, 10, 0, 0, 0, 0, 0, 1, 0, 1],
        "bus":        [10,  8, 1, 1, 0, 0, 0, 1, 0, 0],
        "warehouse":  [ 8,  5, 2, 1, 0, 0, 1, 0, 0, 0],
        "end_to_end": [10,  5, 3, 2, 0, 0, 1, 2, 0, 1],
    }  # fmt: skip
    rates = {s["stage"]: s["loss_rate"] for s in [*w1["stages"], w1["end_to_end"]]}
    assert rates == {"gateway": 0.0, "bus": 0.1, "warehouse": 0.25, "end_to_end": 0.3}
    bus, warehouse = w1["stages"][1]["latency_ms"], w1["stages"][2]["latency_ms"]
    assert bus == {"p50": 1000, "p95": 1000, "p99": 1000, "max": 1000}
    # e01 e02 e07 e09 a minute after their receipt, e08 half an hour.
    assert (warehouse["p50"], warehouse["max"]) == (60_000, 1_800_000)

    assert (w2["status"], w2["events"]) == ("incomplete", 4)
    assert counters(w2) == {
        "gateway":    [4, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        "bus":        [4, 4, 0, 0, 0, 0, 1, 0, 1, 1],
        "warehouse":  [4, 3, 0, 0, 1, 0, 1, 1, 1, 0],
        "end_to_end": [4, 3, 0, 0, 1, 0, 1, 1, 2, 1],
    }  # fmt: skip
    gateway_files = tmp_path / "gateway" / "*.jsonl"
    assert [n for n in w1["notes"] if "rows without a usable event ID or time" in n] == [
        f"gateway: 1 rows without a usable event ID or time in files {gateway_files}",
        "gateway: 1 rows without a usable event ID or time, 9.0909% of the rows seen, above "
        "max_unreadable_rate 0.0001: the window cannot be judged ok",
    ]
    assert [n for n in w2["notes"] if "without a usable event ID or time" in n] == [
        f"bus: 1 rows without a usable event ID or time in kafka topic {unique} @ {bootstrap}",
    ]

    found = api.reconcile(
        config, "2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z", now="2026-11-20T13:00:00Z"
    )
    missing = found.missing()
    by_event = {r.event_id: (r.window_start.hour, r.stage, r.outcome) for r in missing.itertuples()}
    assert by_event == {
        "e03": (10, "bus", "lost"),
        "e04": (10, "bus", "dead_lettered"),
        "e05": (10, "warehouse", "dead_lettered"),
        "e06": (10, "warehouse", "lost"),
        "e10": (10, "warehouse", "lost"),
        "e12": (11, "warehouse", "pending"),
    }
    # Traced in W1, o1 is unseen: the bus read runs on past W1's range (to 11:35 for
    # records out of order) and holds o1's record at 11:30:01, which is not W1's.
    summary, sightings = api.trace(config, "o1", around="2026-11-20T10:30:00Z")
    assert (summary, len(sightings)) == ("o1: unseen", 0)
    summary, sightings = api.trace(config, "e10", around="2026-11-20T10:30:00Z")
    assert summary == "e10: lost at warehouse"
    assert sightings["stage"].tolist() == ["gateway", "bus"]
