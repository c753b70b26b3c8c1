"""Rows carried from one read to the next (engine/carry.py) against a real broker and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from recon.config import PipelineConfig
from recon.engine.carry import carry_over, joined, remainder
from recon.model import LedgerRead, Ranges, StageInput, Window
from recon.simulate.plant import create_topic
from recon.sources import read_ledger

from .helpers import at
from .test_kafka_reader import _produce


def _rows(read: LedgerRead) -> list[tuple]:
    columns = ["event_id", "stage_time", "location", "partition", "offset"]
    return sorted(tuple(r.values()) for r in read.table.select(columns).to_pylist())


def _bad(read: LedgerRead) -> list[tuple]:
    return sorted((b.where, b.reason, b.count, b.time) for b in read.bad_records)


def _reads(cfg: PipelineConfig, span: Window) -> dict[str, LedgerRead]:
    """Every stage of `cfg` read over its range for `span`, by name."""
    ranges = Ranges(grace=cfg.window.grace, skew=cfg.window.skew)
    origin, kafka_stage = cfg.stages
    return {
        origin.name: read_ledger(origin, ranges.origin(span)),
        kafka_stage.name: read_ledger(kafka_stage, ranges.downstream(span)),
    }


def _read_after(cfg: PipelineConfig, first: Window, second: Window) -> dict[str, LedgerRead]:
    """`second`'s reads after a read of `first`: only the rest of what was kept is read."""
    ranges = Ranges(grace=cfg.window.grace, skew=cfg.window.skew)
    reads = _reads(cfg, first)
    stages = [StageInput(s.name, reads[s.name]) for s in cfg.stages]
    kept = carry_over(cfg, ranges, first, stages, second, second.end + timedelta(days=1))
    wants = zip(cfg.stages, (ranges.origin(second), ranges.downstream(second)), strict=True)
    out = {}
    for source, want in wants:
        head = kept.get(source.name)
        out[source.name] = joined(head, want, read_ledger(source, remainder(head, want)))
    out["kept"] = sorted(kept)  # type: ignore[assignment]
    return out


def test_carried_rows_equal_a_whole_read(pg_url: str, bootstrap: str, unique: str) -> None:
    """Receipts at :10, :30, :50 of 09:00-12:59, the one at 10:30 with a NULL ID; Kafka (2
    partitions) every 10 min 09:00-12:50, keyless messages at 10:35 and 11:05. Hourly
    windows, grace 30 m, skew 1 m: [11:00, 12:00) read after [10:00, 11:00), with the rows
    both ranges share carried over, gives exactly the rows and the unusable rows of its own
    read. Then offsets 0-1 of partition 0 (10:00, 10:10) are deleted: the first read has a
    retention gap, so the topic is read whole again, and equals its own read too."""
    table = f"{unique}_receipts"
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {table} (event_id text, received_at timestamptz)")
        times = [at(f"{h:02d}:{m:02d}:00") for h in range(9, 13) for m in (10, 30, 50)]
        for i, t in enumerate(times):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (None if i == 4 else f"r{i}", t))
    create_topic(bootstrap, unique, 2)
    messages = [
        {"key": f"k{h}{m:02d}".encode(), "t": f"{h:02d}:{m:02d}:00", "p": h % 2}
        for h in range(9, 13)
        for m in range(0, 60, 10)
    ]
    messages += [{"key": None, "t": "10:35:00", "p": 0}, {"key": None, "t": "11:05:00", "p": 1}]
    _produce(bootstrap, unique, sorted(messages, key=lambda m: m["t"]))
    cfg = PipelineConfig.model_validate(
        {
            "pipeline": unique,
            "window": {"size": "1h", "grace": "30m", "skew": "1m"},
            "stages": [
                {
                    "name": "webhook",
                    "source": "sql",
                    "url": pg_url,
                    "table": table,
                    "time": "received_at",
                },
                {"name": "kafka", "source": "kafka", "bootstrap": bootstrap, "topic": unique},
            ],
        }
    )
    first = Window(at("10:00:00"), at("11:00:00"))
    second = Window(first.end, first.end + timedelta(hours=1))

    def same_as_own_read(kept: list[str]) -> dict[str, LedgerRead]:
        carried, own = _read_after(cfg, first, second), _reads(cfg, second)
        assert carried.pop("kept") == kept
        for name, read in own.items():
            assert _rows(carried[name]) == _rows(read), name
            assert _bad(carried[name]) == _bad(read), name
            assert carried[name].gaps == read.gaps, name
            assert carried[name].table.schema == read.table.schema, name
        return own

    own = same_as_own_read(["kafka", "webhook"])
    # Receipts of [10:30, 12:01): 10:30 (NULL ID: unusable), then 10:50 .. 11:50.
    assert [r[0] for r in _rows(own["webhook"])] == ["r5", "r6", "r7", "r8"]
    assert _bad(own["webhook"])[0][1:] == ("event_id is NULL", 1, at("10:30:00"))
    # The topic over [10:59, 12:30), read on to the first record stamped 12:35 or later:
    # 11:00 .. 12:30 with keys (10), the keyless 11:05 (carried over from the first read).
    assert len(_rows(own["kafka"])) == 10 and len(_bad(own["kafka"])) == 1
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(unique, 0, 2)]).values():
        future.result(30)
    assert _reads(cfg, first)["kafka"].gaps  # the first read starts at the low watermark
    same_as_own_read(["webhook"])


def test_records_out_of_timestamp_order_are_carried_once(
    pg_url: str, bootstrap: str, unique: str
) -> None:
    """Kafka, one partition, in offset order: k1 10:50, k2 11:20, k3 11:36, k4 11:10 (26 min
    behind k3), k5 11:33, k6 12:00, k7 12:40, k8 12:20 (20 min behind k7). Windows [10:00,
    11:00) then [11:00, 12:00), grace 30 m, skew 1 m, records allowed 5 min out of order.

    The first read, of [09:59, 11:30), goes on to k3 (the first record stamped 11:35 or
    later) and keeps k2 (stamped in [10:59, 11:30)). The rest starts at k3, where it
    stopped: k3, k4 (stamped in the kept range but stored after its read), k5, k6. That is
    exactly the second window's own read (k2 .. k6), k4 once. k8 is past both reads' end:
    neither has it."""
    table = f"{unique}_receipts"
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {table} (event_id text, received_at timestamptz)")
    create_topic(bootstrap, unique, 1)
    stamps = {"k1": "10:50", "k2": "11:20", "k3": "11:36", "k4": "11:10", "k5": "11:33"}
    stamps |= {"k6": "12:00", "k7": "12:40", "k8": "12:20"}
    _produce(bootstrap, unique, [{"key": k.encode(), "t": f"{t}:00"} for k, t in stamps.items()])
    cfg = PipelineConfig.model_validate(
        {
            "pipeline": unique,
            "window": {"size": "1h", "grace": "30m", "skew": "1m"},
            "stages": [
                {"name": "webhook", "source": "sql", "url": pg_url, "table": table},
                {"name": "kafka", "source": "kafka", "bootstrap": bootstrap, "topic": unique},
            ],
        }
    )
    first = Window(at("10:00:00"), at("11:00:00"))
    second = Window(first.end, first.end + timedelta(hours=1))
    carried, own = _read_after(cfg, first, second), _reads(cfg, second)
    assert carried.pop("kept") == ["kafka", "webhook"]
    ids = [r[0] for r in _rows(carried["kafka"])]
    assert ids == ["k2", "k3", "k4", "k5", "k6"]
    assert _rows(carried["kafka"]) == _rows(own["kafka"])
    assert carried["kafka"].warnings == own["kafka"].warnings
    assert own["kafka"].warnings[0].startswith(f"{unique}[0]: a record is stamped 1560s behind")


def test_ranges_younger_than_the_settle_time_are_read_again(pg_url: str, unique: str) -> None:
    """Rows may still arrive in a range younger than the settle time, which neither the kept
    rows nor the next read (starting where the first ended) would hold: nothing is carried.
    The test day is a day old at `now`; a ten-year settle time makes it young."""
    table = f"{unique}_receipts"
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {table} (event_id text, received_at timestamptz)")
        conn.execute(f"INSERT INTO {table} VALUES ('r', %s)", (at("10:45:00"),))
    stage = {"source": "sql", "url": pg_url, "table": table, "time": "received_at"}
    cfg = PipelineConfig.model_validate(
        {
            "pipeline": unique,
            "window": {"size": "1h", "grace": "30m", "skew": "1m"},
            "stages": [{"name": "webhook", **stage}, {"name": "copy", **stage}],
        }
    )
    first = Window(at("10:00:00"), at("11:00:00"))
    second = Window(first.end, first.end + timedelta(hours=1))
    ranges = Ranges(grace=cfg.window.grace, skew=cfg.window.skew)
    stages = [StageInput(s.name, read_ledger(s, ranges.origin(first))) for s in cfg.stages]
    now = second.end + timedelta(days=1)
    assert sorted(carry_over(cfg, ranges, first, stages, second, now)) == ["copy", "webhook"]
    young = cfg.model_copy(
        update={"window": cfg.window.model_copy(update={"settle": timedelta(days=3650)})}
    )
    assert carry_over(young, ranges, first, stages, second, now) == {}
