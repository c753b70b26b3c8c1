"""Plant one day of the incident-like scenario into the real servers, an hour at a time.

Each hour is planned and planted on its own (a 120 M-event day does not fit in
memory as one plan), with its own ID prefix; the truth of each hour's window
is kept and the plan dropped. Hours only interact through rows that land in
the next hour's range (retries, late lake writes), which belong to their own
cohort by ID, so each hour's truth is its window's truth.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition

from recon.simulate.plant import (
    Targets,
    _produce_all,
    _producer,
    append_receipts,
    commit_offsets,
    create_receipts_table,
    create_topic,
    index_receipts,
    produce_dead_letters,
    produce_events,
    register,
    write_lake,
)
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth

DAY = datetime(2026, 11, 2, tzinfo=UTC)
HOURS = 24
PARTITIONS = 6
WINDOW, GRACE, SKEW = timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1)

# The Avro day's value schema (`--avro`): a payment event whose ID sits in a nested
# record after a string field, so a reader must walk past other fields to reach it.
PAYMENT = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "recon.bench",
    "fields": [
        {"name": "account_id", "type": "string"},
        {
            "name": "payment",
            "type": {
                "type": "record",
                "name": "Payment",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "amount_cents", "type": "long"},
                    {"name": "currency", "type": "string"},
                ],
            },
        },
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
AVRO_ID = "value:payment.id"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURRENCIES = np.array(["EUR", "USD", "GBP"], dtype=object)


def hour_scenario(hour: int, events_per_hour: int) -> Scenario:
    """Hour `hour` of the day: every fault planted, 30 % lake loss from 02:00 to 10:00."""
    return Scenario(
        start=DAY + timedelta(hours=hour),
        hours=1,
        events_per_hour=events_per_hour,
        partitions=PARTITIONS,
        seed=5 + hour,
        kafka_loss=0.00004,
        lake_loss=0.302 if 2 <= hour < 10 else 0.0,
        dead_letters_per_hour=5,
        webhook_retries=0.002,
        producer_duplicates=0.001,
        lake_duplicates=0.0005,
        late_per_hour=3,
        orphans_per_hour=1,
        id_prefix=f"evt{hour:02d}",
    )


@dataclass
class DayTruth:
    """What each of the day's windows must show, and the size of what was planted."""

    events: int  # cohort events (distinct IDs with a receipt)
    windows: list[dict[str, dict[str, int]]]  # per window: stage -> counter -> value
    ledger_rows: dict[str, int]  # rows planted per ledger

    def not_in_lake(self, w: int) -> int:
        """Window w's events with no lake row in its range: the hand-written approach's answer."""
        stages = self.windows[w]
        return stages["webhook"]["arrived"] - stages["lake"]["arrived"]


def plant_day(events: int, t: Targets, registry: str | None = None) -> DayTruth:
    """Plant 24 hours of `events // 24` events each; returns the truth per window.

    With `registry`, the topic's values are PAYMENT in Confluent wire format
    (the schema registered there) and the key is the account ID, not the event ID.
    """
    per_hour = events // HOURS
    create_receipts_table(t.pg_url, t.receipts_table)
    create_topic(t.bootstrap, t.topic, PARTITIONS)
    create_topic(t.bootstrap, t.dead_letter_topic, 1)
    schema_id = None if registry is None else register(registry, f"{t.topic}-value", PAYMENT)
    windows, rows = [], {"receipts": 0, "kafka": 0, "lake": 0, "dead_letters": 0}
    cohort = 0
    for hour in range(HOURS):
        started = time.perf_counter()
        p = plan(hour_scenario(hour, per_hour))
        append_receipts(p.receipts, t.pg_url, t.receipts_table)
        if schema_id is None:
            produce_events(p.kafka, t.bootstrap, t.topic, check=False)
        else:
            produce_avro(p.kafka, t.bootstrap, t.topic, schema_id)
        produce_dead_letters(p.dead_letters, t.bootstrap, t.dead_letter_topic, t.topic)
        write_lake(p.lake, t.lake_path, batch=f"h{hour:02d}")
        (w,) = truth(p, WINDOW, GRACE, SKEW)
        windows.append(w.stages)
        cohort += w.events
        for name, table in [
            ("receipts", p.receipts),
            ("kafka", p.kafka),
            ("lake", p.lake),
            ("dead_letters", p.dead_letters),
        ]:
            rows[name] += table.num_rows
        print(
            f"  hour {hour:02d}: {p.events.num_rows:,} events planted "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    index_receipts(t.pg_url, t.receipts_table)
    # The loader consumed everything: its committed offsets are the partitions' ends.
    commit_offsets(t.bootstrap, t.group, t.topic, end_offsets(t.bootstrap, t.topic))
    if sum(end_offsets(t.bootstrap, t.topic).values()) != rows["kafka"]:
        raise RuntimeError(f"{t.topic} does not hold the {rows['kafka']:,} planted messages")
    return DayTruth(cohort, windows, rows)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "recon-bench-offsets"})
    try:
        consumer.list_topics(topic, timeout=30)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def produce_avro(kafka: pa.Table, bootstrap: str, topic: str, schema_id: int) -> None:
    """The plan's messages as PAYMENT values keyed by account, on the plan's partitions.

    The plan's partitions are kept (its offsets and the truth follow from them)
    rather than hashing the account key as a default partitioner would.
    """
    keys, values = avro_payments(kafka, schema_id)
    producer = _producer(bootstrap)
    produce = producer.produce
    part = kafka["partition"].to_pylist()
    ts = kafka["ts_ms"].to_pylist()
    _produce_all(
        producer,
        lambda i: produce(topic, values[i], keys[i], partition=part[i], timestamp=ts[i]),
        len(values),
    )


def avro_payments(kafka: pa.Table, schema_id: int) -> tuple[list[bytes], list[bytes]]:
    """(keys, values): each message's account ID and its PAYMENT value in wire format.

    Encoded a field at a time for all rows (fastavro's writer per message would
    add ~1 min per 12 M messages); a sample is checked against fastavro's reader.
    Account, amount and currency follow from the event ID, so a duplicate
    message carries the same payment.
    """
    ids = kafka["event_id"].cast(pa.binary())
    # crc32 as a stable hash: Python's hash() of bytes changes between processes.
    h = np.fromiter((zlib.crc32(b) for b in ids.to_pylist()), np.int64, len(ids))
    account = pc.binary_join_element_wise(
        "acct-", pc.utf8_lpad(pc.cast(pa.array(h % 50_000), pa.string()), 5, "0"), ""
    ).cast(pa.binary())
    amount = 100 + (h >> 16) % 250_000
    currency = pa.array(CURRENCIES[h % len(CURRENCIES)], pa.binary())
    header = pa.scalar(struct.pack(">bI", 0, schema_id), pa.binary())
    values = pc.binary_join_element_wise(
        header,
        _longs(pc.binary_length(account).to_numpy()),
        account,
        _longs(pc.binary_length(ids).to_numpy()),
        ids,
        _longs(amount),
        _longs(pc.binary_length(currency).to_numpy()),
        currency,
        _longs(kafka["ts_ms"].to_numpy()),
        pa.scalar(b"", pa.binary()),  # the separator
    ).to_pylist()
    _check_sample(values, ids, account, amount, currency, kafka["ts_ms"].to_numpy())
    return account.to_pylist(), values


def _longs(values: np.ndarray) -> pa.Array:
    """Avro longs (zigzag varints), one binary value per row."""
    v = np.asarray(values, np.int64)
    z = ((v << 1) ^ (v >> 63)).view(np.uint64)
    shifts = np.arange(10, dtype=np.uint64) * np.uint64(7)
    groups = (z[:, None] >> shifts) & np.uint64(0x7F)
    nbytes = 1 + ((z[:, None] >> shifts[1:]) != 0).sum(axis=1)
    k = np.arange(10)
    groups |= np.where(k < nbytes[:, None] - 1, np.uint64(0x80), np.uint64(0))
    data = groups[k < nbytes[:, None]].astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(nbytes)]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(v), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _check_sample(
    values: list[bytes],
    ids: pa.Array,
    account: pa.Array,
    amount: np.ndarray,
    currency: pa.Array,
    ts_ms: np.ndarray,
) -> None:
    """fastavro must read back what was meant, for every 1,000th value."""
    schema = fastavro.parse_schema(PAYMENT)
    for i in range(0, len(values), 1_000):
        record = fastavro.schemaless_reader(io.BytesIO(values[i][5:]), schema, None)
        want = {
            "account_id": account[i].as_py().decode(),
            "payment": {
                "id": ids[i].as_py().decode(),
                "amount_cents": int(amount[i]),
                "currency": currency[i].as_py().decode(),
            },
            "occurred_at": EPOCH + timedelta(milliseconds=int(ts_ms[i])),
        }
        if record != want:
            raise RuntimeError(f"Avro value {i} reads {record}, meant {want}")
