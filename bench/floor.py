"""The read floor: each ledger's event IDs for the day, read with the fastest plain code.

No recon code runs here. Each source is read alone, one after the other, and
only its IDs are kept (recon also keeps times, partitions and offsets). Where
there are two plain ways (PostgreSQL), the faster one is the floor.
"""

from __future__ import annotations

import gc
import io
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc_pg
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
from confluent_kafka import Consumer, Message, TopicPartition
from sqlalchemy.engine import make_url


def libpq_url(pg_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what libpq and ADBC take)."""
    return make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


def receipts_adbc(pg_url: str, table: str, start: datetime, end: datetime) -> int:
    """ADBC's PostgreSQL driver: binary COPY decoded straight into Arrow (C++).

    The bounds are literals: a query with parameters is not streamed as COPY.
    """
    with adbc_pg.connect(libpq_url(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT event_id FROM {table} WHERE received_at >= TIMESTAMPTZ '{start.isoformat()}' "
            f"AND received_at < TIMESTAMPTZ '{end.isoformat()}'"
        )
        return cur.fetch_arrow_table().num_rows


def receipts_copy(pg_url: str, table: str, start: datetime, end: datetime) -> int:
    """psycopg COPY ... TO STDOUT (csv), parsed by Arrow's CSV reader."""
    buffer = io.BytesIO()
    with psycopg.connect(libpq_url(pg_url)) as conn, conn.cursor() as cur:
        query = (
            f"COPY (SELECT event_id FROM {table} WHERE received_at >= %s "
            "AND received_at < %s) TO STDOUT (FORMAT csv)"
        )
        with cur.copy(query, (start, end)) as copy:
            for data in copy:
                buffer.write(data)
    buffer.seek(0)
    options = pacsv.ReadOptions(column_names=["event_id"], block_size=64 << 20)
    return pacsv.read_csv(buffer, read_options=options).num_rows


def lake(path: Path, start: datetime, end: datetime) -> int:
    """pyarrow dataset: the ID column of the range's hive partitions, filtered on time."""
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    n_days = (end.date() - start.date()).days + 1
    days = [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(n_days)]
    table = dataset.to_table(
        columns=["event_id"],
        filter=ds.field("dt").isin(days)
        & (ds.field("ingested_at") >= pa.scalar(start, pa.timestamp("us", tz="UTC")))
        & (ds.field("ingested_at") < pa.scalar(end, pa.timestamp("us", tz="UTC"))),
    )
    return table.num_rows


def topic(
    bootstrap: str,
    name: str,
    start: datetime,
    end: datetime,
    pick: Callable[[Message], bytes],
    decode: Callable[[pa.Array], pa.Array] | None = None,
) -> int:
    """confluent-kafka: assign the day's offsets, consume in 10 k batches, keep `pick(m)`.

    With `decode`, the picked bytes are turned into IDs every 100 k messages.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "recon-bench-floor",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 16 << 20,
            "queued.min.messages": 100_000,
            "queued.max.messages.kbytes": 512 << 10,
            # librdkafka waits 1 s (its default) before fetching for a full queue again.
            "fetch.queue.backoff.ms": 10,
        }
    )
    try:
        parts = sorted(consumer.list_topics(name, timeout=30).topics[name].partitions)
        first = consumer.offsets_for_times(
            [TopicPartition(name, p, int(start.timestamp() * 1000)) for p in parts], 30
        )
        last = consumer.offsets_for_times(
            [TopicPartition(name, p, int(end.timestamp() * 1000)) for p in parts], 30
        )
        ends = {}
        for tp in last:
            high = consumer.get_watermark_offsets(TopicPartition(name, tp.partition), 30)[1]
            ends[tp.partition] = high if tp.offset < 0 else tp.offset
        todo = {tp.partition: ends[tp.partition] - tp.offset for tp in first if tp.offset >= 0}
        remaining = sum(n for n in todo.values() if n > 0)
        consumer.assign([tp for tp in first if todo.get(tp.partition, 0) > 0])
        ids: list[bytes] = []
        decoded = 0
        gc.disable()  # one GC-tracked Message per record: the collector doubles the time
        while remaining > 0:
            msgs = consumer.consume(min(remaining, 10_000), timeout=1)
            for m in msgs:
                if m.error() is not None:
                    raise RuntimeError(f"{name}: {m.error()}")
            ids.extend(map(pick, msgs))
            remaining -= len(msgs)
            if decode is not None and len(ids) >= 100_000:
                decoded += len(decode(pa.array(ids, pa.binary())))
                ids.clear()
        picked = pa.array(ids, pa.binary())
        return decoded + len(picked if decode is None else decode(picked))
    finally:
        gc.enable()
        consumer.close()


def payment_ids(values: pa.Array) -> pa.Array:
    """payment.id of bench/day.py's PAYMENT values (Confluent wire format), with numpy.

    The layout is known, so this reads only what precedes the ID (the 5-byte
    header, account_id's length and bytes, the ID's length) for all values at
    once and gathers the ID bytes; no validation. fastavro's schemaless_reader
    per message reads ~120 k values/s here, which would make the floor slower
    than recon (bench/avro_ids.py).
    """
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset :][: len(values) + 1]
    data = np.frombuffer(values.buffers()[2], np.uint8)
    account, pos = _avro_long(data, offsets[:-1].astype(np.int64) + 5)
    length, pos = _avro_long(data, pos + account)
    ends = np.cumsum(length)
    gather = np.repeat(pos - (ends - length), length) + np.arange(ends[-1] if len(ends) else 0)
    out = np.concatenate([[0], ends]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(out), pa.py_buffer(data[gather])]
    )


def _avro_long(data: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varint at each position, and the position after it."""
    value = np.zeros(len(pos), np.int64)
    pos = pos.copy()
    more = np.ones(len(pos), bool)
    shift = 0
    while more.any():
        byte = data[pos[more]].astype(np.int64)
        value[more] |= (byte & 0x7F) << shift
        pos[more] += 1
        more[more] = byte >= 0x80
        shift += 7
    return (value >> 1) ^ -(value & 1), pos


def dead_letter_id(m: Message) -> bytes:
    """The event ID header the loader writes on a dead letter."""
    return dict(m.headers() or [])["event_id"]


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """(seconds, rows) of one plain read."""
    started = time.perf_counter()
    rows = fn()
    return time.perf_counter() - started, rows
