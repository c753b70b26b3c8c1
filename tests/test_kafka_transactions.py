"""`kafka` reader on transactional topics whose records are older than their commit.

A backfill, MirrorMaker 2 catching up or a lagging exactly-once app commits records
stamped hours before the commit, and every commit or abort marker carries the broker's
clock at commit. offsets_for_times counts the markers: asked for any instant of the
back-dated hours, it answers with the first marker. A read ended there saw 74 of 894
records in the field (and 0 of 1,100 in the next window). Against the real broker
(Apache Kafka 4.2, KRaft), read_committed as every recon read.

The planted topic (`planted`, once for the module), 3 partitions:

- hours W0, W1, W2 (W0 starts 7 hours before the hour now began), each with 1,000
  records e{k}-0000 .. e{k}-0999 stamped every 3.6 s from the hour's start, committed
  25 at a time in stamp order, record j of a transaction in partition j % 3;
- after every 4th committed transaction, an aborted one of 5 records x{k}-0 .. stamped
  inside the hour (50 an hour);
- 3 records l{k}-0 .. l{k}-2 stamped 120, 90 and 60 s before the hour's end, committed at
  the end of the next hour's first transaction: stored after records stamped up to 86.4 s
  past the end (out of timestamp order by up to 206.4 s, within out_of_order's 5 min);
- a tail of 200 records t-0000 .. t-0199 stamped every 3.6 s from W2's end (to 12 min past
  it), committed 25 at a time, W2's late ones at the end of its first transaction.

So each hour holds 1,003 committed records, and the topic 3,209 (and 150 aborted ones).
Every marker is stamped after all of them: each partition's first marker (after the first
transaction's 9, 8 and 8 records) is offsets_for_times' answer for any instant of the 3
hours and the 5 minutes after them but their first 86.4 s.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from recon import api
from recon.config import PipelineConfig
from recon.model import LedgerRead, Window
from recon.simulate.plant import create_topic, write_receipts
from recon.sources import kafka
from recon.sources.kafka import client as kafka_client
from recon.sources.kafka import offsets as kafka_offsets
from recon.timeutil import epoch_ms

HOUR_MS = 3_600_000
PARTS = 3
PER_TXN = 25
OOO = timedelta(minutes=5)  # out_of_order's default


@dataclass(frozen=True)
class Planted:
    """What is in the topic: the committed records in the order produced, the aborted IDs."""

    topic: str
    base: datetime  # W0's start
    rows: list[tuple[str, int, int]]  # committed (event ID, partition, stamp ms), in order
    aborted: frozenset[str]
    first_marker: dict[int, int]  # each partition's first offset that is a commit marker

    def window(self, k: int) -> Window:
        """W0, W1 or W2."""
        return Window(self.base + timedelta(hours=k), self.base + timedelta(hours=k + 1))

    def stamped(self, span: Window) -> list[str]:
        """The committed records stamped in `span`."""
        lo, hi = epoch_ms(span.start), epoch_ms(span.end)
        return sorted(i for i, _, t in self.rows if lo <= t < hi)

    def between(self, start: datetime, stop: datetime) -> list[str]:
        """Per partition, the committed records from the first stamped `start` or later up to
        the first stamped `stop` or later (not included), whatever their stamps."""
        lo, hi = epoch_ms(start), epoch_ms(stop)
        found = []
        for p in range(PARTS):
            stamps = [(i, t) for i, q, t in self.rows if q == p]
            first = next((n for n, (_, t) in enumerate(stamps) if t >= lo), len(stamps))
            last = next((n for n, (_, t) in enumerate(stamps) if n >= first and t >= hi), None)
            found += [i for i, _ in stamps[first:last]]
        return sorted(found)


def _transactions(base_ms: int) -> list[tuple[bool, list[tuple[str, int]]]]:
    """(committed, [(event ID, stamp ms)]) in the order produced (module docstring)."""
    txns: list[tuple[bool, list[tuple[str, int]]]] = []
    late: list[tuple[str, int]] = []
    for k in range(4):  # the three hours, then the tail
        start = base_ms + k * HOUR_MS
        if k < 3:
            records = [(f"e{k}-{i:04d}", start + i * 3_600) for i in range(1000)]
        else:
            records = [(f"t-{i:04d}", start + i * 3_600) for i in range(200)]
        for n, at in enumerate(range(0, len(records), PER_TXN)):
            txns.append((True, records[at : at + PER_TXN] + (late if n == 0 else [])))
            if k < 3 and n % 4 == 3:
                stamp = records[at][1]
                txns.append((False, [(f"x{k}-{n // 4 * 5 + j}", stamp + j) for j in range(5)]))
        end = start + HOUR_MS
        late = [(f"l{k}-{j}", end - (120 - 30 * j) * 1000) for j in range(3)]
    return txns


def _plant(bootstrap: str, topic: str, base: datetime) -> Planted:
    create_topic(bootstrap, topic, PARTS)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    rows, aborted, sizes = [], set(), [0] * PARTS
    txns = _transactions(epoch_ms(base))
    for committed, records in txns:
        producer.begin_transaction()
        for j, (event_id, stamp) in enumerate(records):
            producer.produce(topic, b"v", event_id.encode(), partition=j % PARTS, timestamp=stamp)
            sizes[j % PARTS] += 1
            if committed:
                rows.append((event_id, j % PARTS, stamp))
            else:
                aborted.add(event_id)
        if committed:
            producer.commit_transaction(30)
        else:  # written first: an abort drops the records not sent yet
            assert producer.flush(30) == 0
            producer.abort_transaction(30)
    # Markers are written after the commit returns; the read stops at the last stable offset.
    _await_stable(bootstrap, topic, [n + len(txns) for n in sizes])
    first = txns[0][1]
    first_marker = {p: len(first[p::PARTS]) for p in range(PARTS)}
    return Planted(topic, base, rows, frozenset(aborted), first_marker)


def _await_stable(bootstrap: str, topic: str, highs: list[int]) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "lso", "isolation.level": "read_committed"}
    )
    try:
        for _ in range(100):
            marks = [
                consumer.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)[1]
                for p in range(PARTS)
            ]
            if marks == highs:
                return
            time.sleep(0.1)
        raise AssertionError(f"{topic}: last stable offsets {marks}, not {highs}")
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def planted(bootstrap: str) -> Planted:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return _plant(bootstrap, f"t{uuid.uuid4().hex[:10]}", now - timedelta(hours=7))


def _cfg(bootstrap: str, topic: str) -> kafka.Config:
    return kafka.Config(name="kafka", source="kafka", bootstrap=bootstrap, topic=topic)


def _ids(read: LedgerRead) -> list[str]:
    return sorted(read.table.column("event_id").to_pylist())


def _inside(read: LedgerRead, span: Window) -> list[str]:
    rows = read.table.select(["event_id", "stage_time"]).to_pylist()
    return sorted(r["event_id"] for r in rows if span.start <= r["stage_time"] < span.end)


def _places(read: LedgerRead) -> list[tuple[int, int]]:
    parts, offsets = (read.table.column(c).to_pylist() for c in ("partition", "offset"))
    return sorted(zip(parts, offsets, strict=True))


def test_offsets_for_times_lands_on_the_first_marker(bootstrap: str, planted: Planted) -> None:
    """The offsets the reader used to read for each hour (offsets_for_times of its start and
    of 5 minutes past its end): W0's ended at each partition's first marker, after the first
    transaction's 25 records (of 1,003); W1's and W2's started and ended there (nothing).
    The marker is no record: no read returns its offset."""
    cfg = _cfg(bootstrap, planted.topic)
    consumer = kafka_client.new_consumer(cfg)
    try:
        ranges = [
            kafka_offsets.offset_ranges(consumer, cfg, planted.window(k).widen(timedelta(0), OOO))
            for k in range(3)
        ]
    finally:
        consumer.close()
    marker = planted.first_marker
    assert marker == {0: 9, 1: 8, 2: 8}
    assert [[(r.partition, r.start, r.end) for r in rs] for rs in ranges] == [
        [(p, 0, marker[p]) for p in range(PARTS)],
        [(p, marker[p], marker[p]) for p in range(PARTS)],
        [(p, marker[p], marker[p]) for p in range(PARTS)],
    ]
    everything = kafka.read(cfg, Window(planted.base, planted.base + timedelta(hours=4)))
    assert len(_ids(everything)) == len(planted.rows) == 3_209
    assert not set(marker.items()) & set(_places(everything))


def test_each_hour_reads_exactly_its_committed_records(bootstrap: str, planted: Planted) -> None:
    """Each hour's read holds its 1,003 committed records (its 3 late ones too), none
    aborted, none twice. The read is, per partition, every committed record from the first
    stamped at the hour's start or later up to the first stamped 5 minutes past its end:
    it also holds the next hour's first records and the previous hour's late ones."""
    cfg = _cfg(bootstrap, planted.topic)
    for k in range(3):
        hour = planted.window(k)
        read = kafka.read(cfg, hour)
        ids = _ids(read)
        assert len(ids) == len(set(ids))
        assert _inside(read, hour) == planted.stamped(hour)
        assert len(planted.stamped(hour)) == 1_003
        assert {f"l{k}-{j}" for j in range(3)} <= set(ids)
        assert ids == planted.between(hour.start, hour.end + OOO)
        assert not planted.aborted & set(ids)
        assert (read.warnings, read.gaps, read.bad_records) == ([], [], [])


def test_three_hours_read_as_one_range(bootstrap: str, planted: Planted) -> None:
    """One read of W0 .. W2 holds the union of the hours' records (3,009), from the first
    record to the first stamped 5 minutes past W2's end (t-0084, stamped 5:02.4 past it).
    Read on to an hour past the tail, it holds all 3,209 and stops at the last stable
    offset (a marker ends each partition) without waiting for the partitions' EOF."""
    cfg = _cfg(bootstrap, planted.topic)
    three = Window(planted.base, planted.base + timedelta(hours=3))
    read = kafka.read(cfg, three)
    union = sorted(i for k in range(3) for i in planted.stamped(planted.window(k)))
    assert _inside(read, three) == union and len(union) == 3_009
    assert _ids(read) == planted.between(three.start, three.end + OOO)
    assert len(_ids(read)) == 3_009 + 84
    assert (read.warnings, read.gaps) == ([], [])
    beyond = three.widen(timedelta(0), timedelta(hours=1))
    took = []
    for _ in range(3):
        started = time.monotonic()
        whole = kafka.read(cfg, beyond)
        took.append(time.monotonic() - started)
        assert _ids(whole) == sorted(i for i, _, _ in planted.rows)
    assert min(took) < 0.45  # an EOF comes with the next fetch, 500 ms (fetch.wait.max.ms) on


def test_the_rest_of_a_range_starts_where_its_read_stopped(
    bootstrap: str, planted: Planted
) -> None:
    """A read of W0, then of the rest of W0 .. W2 ([W0's end + 5 minutes, W2's end), as
    engine/carry.py reads it): no record is in both, and together they are exactly the one
    read of W0 .. W2, offset by offset; the records stamped in W0 .. W2 are the 3,009
    planted."""
    cfg = _cfg(bootstrap, planted.topic)
    first = planted.window(0)
    three = Window(first.start, planted.window(2).end)
    head = kafka.read(cfg, first)
    rest = kafka.read(cfg, Window(first.end + cfg.read_past_end(), three.end))
    assert not set(_places(head)) & set(_places(rest))
    assert sorted(_places(head) + _places(rest)) == _places(kafka.read(cfg, three))
    joined = LedgerRead("kafka", pa.concat_tables([head.table, rest.table]), [], [], None)
    assert _inside(joined, three) == planted.stamped(three)
    assert len(planted.stamped(three)) == 3_009


def test_a_run_of_the_three_hours_loses_nothing(
    pg_url: str, bootstrap: str, planted: Planted, tmp_path: Path
) -> None:
    """`recon run` (the API) over W0 .. W2, hourly windows, with a receipts table holding
    the 3,209 committed records' IDs at their stamps as the origin: each hour has 1,003
    events, all of them arrived at Kafka, none lost."""
    table = f"{planted.topic}_receipts"
    ids, stamps = zip(*((i, t * 1000) for i, _, t in planted.rows), strict=True)
    receipts = pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "received_at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        }
    )
    write_receipts(receipts, pg_url, table)
    cfg = PipelineConfig.model_validate(
        {
            "pipeline": planted.topic,
            "window": {"size": "1h", "grace": "30m", "settle": "2h", "skew": "1m"},
            "expectations": str(tmp_path / "expectations"),  # the run writes its suite there
            "stages": [
                {"name": "webhook", "source": "sql", "url": pg_url, "table": table},
                {
                    "name": "kafka",
                    "source": "kafka",
                    "bootstrap": bootstrap,
                    "topic": planted.topic,
                },
            ],
        }
    )
    result = api.reconcile(cfg, planted.base, planted.base + timedelta(hours=3))
    rows = result.stage_metrics()
    kafka_rows = rows[rows["stage"] == "kafka"]
    assert kafka_rows[["upstream", "arrived", "lost"]].values.tolist() == [[1_003, 1_003, 0]] * 3
    assert set(rows["status"]) == {"ok"}


def test_a_partition_finished_twice_in_one_batch_is_unassigned_once(
    bootstrap: str, unique: str
) -> None:
    """Under load one batch held a partition's last record and its end-of-partition event:
    the reader unassigned it twice in one call and librdkafka aborted the process (SIGABRT,
    a mapped Airflow task killed). Run in a child process: an abort must not take pytest."""
    create_topic(bootstrap, unique, 1)
    code = f"""
from confluent_kafka import Consumer, TopicPartition
from recon.sources import kafka
from recon.sources.kafka import client as kafka_client, fetch as kafka_fetch
from recon.sources.kafka import offsets as kafka_offsets
cfg = kafka.Config(name="t", source="kafka", bootstrap={bootstrap!r}, topic={unique!r})
consumer = kafka_client.new_consumer(cfg)
consumer.assign([TopicPartition({unique!r}, 0, 0)])
bounds = kafka_fetch.Bounds([kafka_offsets.OffsetRange(0, 0, 1, 0, 1)], 0, 1)
assert list(bounds.todo) == [0]
bounds.finish(consumer, cfg, [0, 0])
consumer.close()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]
