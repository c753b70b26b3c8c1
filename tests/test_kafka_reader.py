"""`kafka` reader against the real broker (Apache Kafka 4.2, KRaft)."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from recon.errors import SourceError
from recon.model import LedgerRead
from recon.simulate.plant import commit_offsets, create_topic
from recon.sources import kafka
from recon.sources.kafka import client as kafka_client
from recon.sources.kafka import fetch as kafka_fetch
from recon.timeutil import epoch_ms

from .helpers import W, at


def _produce(bootstrap: str, topic: str, messages: list[dict], **conf: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, **conf})
    for m in messages:
        producer.produce(
            topic,
            m.get("value", b"v"),
            m.get("key"),
            partition=m.get("p", 0),
            timestamp=epoch_ms(at(m["t"])),
            headers=m.get("headers"),
        )
    assert producer.flush(30) == 0


def _await_high_watermark(bootstrap: str, topic: str, high: int) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "wm", "isolation.level": "read_committed"}
    )
    try:
        for _ in range(100):
            if (
                consumer.get_watermark_offsets(TopicPartition(topic, 0), 10, cached=False)[1]
                == high
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"{topic} never reached high watermark {high}")
    finally:
        consumer.close()


def _cfg(bootstrap: str, topic: str, **kw: object) -> kafka.Config:
    return kafka.Config(name="kafka", source="kafka", bootstrap=bootstrap, topic=topic, **kw)


def test_key_ids_exact_offsets_and_bad_keys(bootstrap: str, unique: str) -> None:
    """3 partitions, partition 2 empty. Partition 0: before start, exactly at start (in), no key
    (counted as p0@2), last ms of the window (in), exactly at end (out). Partition 1: in,
    invalid UTF-8 key (counted as p1@1), after the end. Read with no allowance for records
    out of order, which would read on to 11:05 (`test_records_out_of_timestamp_order`)."""
    create_topic(bootstrap, unique, 3)
    _produce(
        bootstrap,
        unique,
        [
            {"key": b"a0", "t": "09:59:59.999"},
            {"key": b"a1", "t": "10:00:00"},
            {"key": None, "t": "10:30:00"},
            {"key": b"a3", "t": "10:59:59.999"},
            {"key": b"a4", "t": "11:00:00"},
            {"key": b"b0", "t": "10:10:00", "p": 1},
            {"key": b"\xff\xfe", "t": "10:20:00", "p": 1},
            {"key": b"b2", "t": "12:00:00", "p": 1},
        ],
    )
    read = kafka.read(_cfg(bootstrap, unique, out_of_order=0), W)
    rows = read.table.select(["event_id", "partition", "offset"]).to_pylist()
    assert sorted((r["event_id"], r["partition"], r["offset"]) for r in rows) == [
        ("a1", 0, 1),
        ("a3", 0, 3),
        ("b0", 1, 0),
    ]
    assert read.table.column("stage_time").to_pylist()[0] == at("10:00:00")
    assert sorted((b.where, b.reason) for b in read.bad_records) == [
        (f"{unique}[0]@2", "no key"),
        (f"{unique}[1]@1", "key is not valid UTF-8"),
    ]
    assert read.gaps == [] and read.committed is None


@pytest.mark.parametrize(
    ("bad_key", "reason"),
    [(b"\xc3(", "key is not valid UTF-8"), (b"", "empty key"), (None, "no key")],
)
def test_one_bad_key_among_good_ones(
    bootstrap: str, unique: str, bad_key: bytes | None, reason: str
) -> None:
    """One partition: keys e0, then the bad one (p0@1), then e2. Each kind of bad key alone
    (no other bad record in the read) is counted with its reason; the good IDs are exact."""
    create_topic(bootstrap, unique, 1)
    _produce(
        bootstrap,
        unique,
        [
            {"key": b"e0", "t": "10:00:01"},
            {"key": bad_key, "t": "10:00:02"},
            {"key": "é2".encode(), "t": "10:00:03"},
        ],
    )
    read = kafka.read(_cfg(bootstrap, unique), W)
    assert read.table.column("event_id").to_pylist() == ["e0", "é2"]
    assert read.table.column("offset").to_pylist() == [0, 2]
    assert [(b.where, b.reason) for b in read.bad_records] == [(f"{unique}[0]@1", reason)]


def test_header_and_json_ids(bootstrap: str, unique: str) -> None:
    """header:event_id with one message lacking it; json:payload.id with invalid JSON, a
    missing field and a numeric id (kept as text)."""
    create_topic(bootstrap, unique, 1)
    _produce(
        bootstrap,
        unique,
        [
            {
                "headers": [("event_id", b"h1")],
                "t": "10:01:00",
                "value": json.dumps({"payload": {"id": "j1"}}).encode(),
            },
            {"headers": [("other", b"x")], "t": "10:02:00", "value": b"{broken"},
            {"headers": [("event_id", b"h3")], "t": "10:03:00", "value": b'{"payload": {}}'},
            {
                "headers": [("event_id", b"h4")],
                "t": "10:04:00",
                "value": b'{"payload": {"id": 42}}',
            },
        ],
    )
    by_header = kafka.read(_cfg(bootstrap, unique, id="header:event_id"), W)
    assert by_header.table.column("event_id").to_pylist() == ["h1", "h3", "h4"]
    assert [(b.where, b.reason) for b in by_header.bad_records] == [
        (f"{unique}[0]@1", "no header:event_id")
    ]
    by_json = kafka.read(_cfg(bootstrap, unique, id="json:payload.id"), W)
    assert by_json.table.column("event_id").to_pylist() == ["j1", "42"]
    assert [(b.where, b.reason) for b in by_json.bad_records] == [
        (f"{unique}[0]@1", "value is not valid JSON"),
        (f"{unique}[0]@2", "no field payload.id"),
    ]
    quoted = kafka.read(_cfg(bootstrap, unique, id="header:it's"), W)  # a name with a quote
    assert quoted.table.num_rows == 0
    assert {b.reason for b in quoted.bad_records} == {"no header:it's"}
    assert len(quoted.bad_records) == 4


def test_records_out_of_timestamp_order(bootstrap: str, unique: str) -> None:
    """One partition, in offset order: a (10:00:10), g (09:59:00, 70 s behind a), b (10:59:50),
    c (11:00:05), d (10:59:58, 7 s behind c), e (11:20), f (10:30, 50 min behind e). The window
    [10:00, 11:00) has a, b, d and f.

    offsets_for_times alone would end the range at c and miss d and f. The read goes on to
    the first record stamped 5 minutes past the end (the default), e: d is read and f is
    not (nothing read shows it). Every record of the offsets read is returned, whatever its
    stamp (g and c too). Allowed one minute, the read sees g 70 s out of order and says so
    for the partition. Allowed an hour, all seven are read.
    """
    create_topic(bootstrap, unique, 1)
    stamps = {"a": "10:00:10", "g": "09:59:00", "b": "10:59:50", "c": "11:00:05"}
    stamps |= {"d": "10:59:58", "e": "11:20:00", "f": "10:30:00"}
    _produce(bootstrap, unique, [{"key": k.encode(), "t": t} for k, t in stamps.items()])

    def ids(read: LedgerRead) -> tuple[list[str], list[str]]:
        """All the IDs read in offset order, and those stamped in the window."""
        rows = read.table.sort_by("offset").to_pylist()
        inside = sorted(r["event_id"] for r in rows if W.start <= r["stage_time"] < W.end)
        return [r["event_id"] for r in rows], inside

    read = kafka.read(_cfg(bootstrap, unique), W)
    assert ids(read) == (["a", "g", "b", "c", "d"], ["a", "b", "d"])
    assert read.warnings == []
    hasty = kafka.read(_cfg(bootstrap, unique, out_of_order="1m"), W)
    assert ids(hasty) == ids(read)
    assert len(hasty.warnings) == 1
    assert hasty.warnings[0].startswith(f"{unique}[0]: a record is stamped 70s behind")
    patient = kafka.read(_cfg(bootstrap, unique, out_of_order="1h"), W)
    assert ids(patient) == (list(stamps), ["a", "b", "d", "f"])
    assert patient.warnings == []


def test_disorder_notes_and_a_negative_allowance() -> None:
    """The tracker's notes, fed batches by hand (end of range 11:00): partition 0 has a record
    70 s behind the newest before it (allowance 1 minute); partition 1's read prefetched two
    records past its end offset, one stamped 10:59 (inside the range: not read). A negative
    allowance is refused."""
    cfg = _cfg("127.0.0.1:9092", "t", out_of_order="1m")
    ms = [epoch_ms(at(t)) for t in ("10:00:10", "09:59:00", "11:00:05", "10:59:00")]
    tracker = kafka_fetch.Disorder(epoch_ms(at("11:00:00")))
    tracker.see(np.array([0, 0]), np.array(ms[:2]))
    tracker.past_end(np.array([1, 1]), np.array([7, 8]), np.array(ms[2:]))
    assert tracker.warnings(cfg) == [
        "t[1]@8 is stamped 2026-11-20T10:59:00Z, inside the range, but stored past the first "
        "record stamped out_of_order (0:01:00) after its end: it was not read (nor, maybe, "
        "others like it), and its event may count as lost; raise out_of_order",
        "t[0]: a record is stamped 70s behind one stored before it, more than out_of_order "
        "(0:01:00): records stamped before the range's end but stored after the first one "
        "stamped that far past it are not read",
    ]
    with pytest.raises(ValueError, match="out_of_order"):
        _cfg("127.0.0.1:9092", "t", out_of_order=-300)


def test_retention_gap_is_reported(bootstrap: str, unique: str) -> None:
    """10 messages 10:00..10:09; delete_records up to offset 4: 6 remain, and the deleted part
    is an unverifiable range whose horizon is the first retained record's time (10:04): the
    records are in time order, so none deleted can be stamped later.

    A second partition holds 10:00, 10:01 (deleted), then 10:04, 10:02 and 10:05: the read sees
    its records 2 minutes out of order, so a deleted one may be stamped up to that much after
    the earliest kept (10:02): the horizon is 10:04."""
    create_topic(bootstrap, unique, 2)
    _produce(bootstrap, unique, [{"key": f"e{i}".encode(), "t": f"10:0{i}:00"} for i in range(10)])
    stamps = ["10:00:00", "10:01:00", "10:04:00", "10:02:00", "10:05:00"]
    _produce(
        bootstrap, unique, [{"key": f"f{i}".encode(), "t": t, "p": 1} for i, t in enumerate(stamps)]
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deleted = [TopicPartition(unique, 0, 4), TopicPartition(unique, 1, 2)]
    for future in admin.delete_records(deleted).values():
        future.result(30)
    read = kafka.read(_cfg(bootstrap, unique), W)
    assert read.table.filter(pc.equal(read.table["partition"], 0))["event_id"].to_pylist() == [
        f"e{i}" for i in range(4, 10)
    ]
    assert [(g.partition, g.low_watermark, g.until) for g in read.gaps] == [
        (0, 4, at("10:04:00")),
        (1, 2, at("10:04:00")),
    ]


def test_an_emptied_partition_leaves_no_gap_under_time_retention(
    bootstrap: str, unique: str
) -> None:
    """Partition 0 holds e0..e2 (10:00-10:02); partition 1 held x0..x2 and was emptied
    (low = high = 3, as retention leaves an idle partition; delete_records stands in for it).
    With infinite retention nothing bounds the deleted records' age: a gap over the whole
    window. With a ten-year retention.ms and no retention.bytes, retention cannot have
    deleted anything newer than ten years before now (W is days old): no gap, so the
    stage's losses stay losses instead of all turning unverifiable."""
    create_topic(bootstrap, unique, 2)
    _produce(
        bootstrap,
        unique,
        [{"key": f"e{i}".encode(), "t": f"10:0{i}:00"} for i in range(3)]
        + [{"key": f"x{i}".encode(), "t": f"10:0{i}:30", "p": 1} for i in range(3)],
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(unique, 1, 3)]).values():
        future.result(30)
    read = kafka.read(_cfg(bootstrap, unique), W)
    assert read.table.column("event_id").to_pylist() == ["e0", "e1", "e2"]
    assert [(g.partition, g.low_watermark, g.until) for g in read.gaps] == [(1, 3, W.end)]
    ten_years = ConfigResource(
        ResourceType.TOPIC,
        unique,
        incremental_configs=[
            ConfigEntry(
                "retention.ms",
                str(3650 * 86_400_000),
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    for future in admin.incremental_alter_configs([ten_years]).values():
        future.result(30)
    assert kafka.read(_cfg(bootstrap, unique), W).gaps == []


def test_transaction_markers_do_not_hang(bootstrap: str, unique: str) -> None:
    """A committed transaction ends with a control record the consumer never sees; the read
    of a range ending on it must stop, not wait for a message that never comes."""
    create_topic(bootstrap, unique, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(
            unique, b"v", f"x{i}".encode(), partition=0, timestamp=epoch_ms(at(f"10:1{i}:00"))
        )
    producer.commit_transaction(30)
    _await_high_watermark(bootstrap, unique, 4)  # 3 records + the commit marker, written async
    started = time.monotonic()
    read = kafka.read(_cfg(bootstrap, unique, timeout_s=20), W)
    assert read.table.column("event_id").to_pylist() == ["x0", "x1", "x2"]
    assert time.monotonic() - started < 10


def test_committed_offsets_of_the_consumer_group(bootstrap: str, unique: str) -> None:
    create_topic(bootstrap, unique, 2)
    _produce(bootstrap, unique, [{"key": b"k", "t": "10:00:00", "p": p} for p in (0, 0, 1)])
    commit_offsets(bootstrap, f"{unique}-g", unique, {0: 1})
    read = kafka.read(_cfg(bootstrap, unique, consumer_group=f"{unique}-g"), W)
    assert read.committed == {0: 1}
    assert read.warnings == [
        f"consumer group '{unique}-g' has no committed offset for "
        f"{unique} partitions [1]: none of their events can be pending"
    ]
    typo = kafka.read(_cfg(bootstrap, unique, consumer_group=f"{unique}-typo"), W)
    assert typo.committed == {} and "partitions [0, 1]" in typo.warnings[0]


def test_empty_range_and_missing_topic(bootstrap: str, unique: str) -> None:
    create_topic(bootstrap, unique, 2)
    assert kafka.read(_cfg(bootstrap, unique), W).table.num_rows == 0
    with pytest.raises(SourceError, match="no-such-topic"):
        kafka.read(_cfg(bootstrap, f"{unique}-no-such-topic", timeout_s=5), W)


def test_unreachable_broker_is_an_error_not_an_empty_ledger() -> None:
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1"):
        kafka.read(_cfg("127.0.0.1:1", "events", timeout_s=3), W)


def test_look_ups_outlast_a_moving_leader_but_not_other_errors() -> None:
    """offsets_for_times answers NOT_LEADER_FOR_PARTITION while a leader moves (and for a
    fresh topic, not retriable by confluent-kafka's flag): the look-up is made again. An
    unknown partition is an answer, raised at once."""
    from confluent_kafka import KafkaError, KafkaException

    cfg = _cfg("127.0.0.1:9092", "t", timeout_s=5)
    answers = [KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 2 + ["offsets"]

    def look_up() -> str:
        answer = answers.pop(0)
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        return answer

    assert kafka_client.retrying(cfg, look_up) == "offsets" and not answers

    def unknown() -> str:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))

    started = time.monotonic()
    with pytest.raises(KafkaException):
        kafka_client.retrying(cfg, unknown)
    assert time.monotonic() - started < 1
