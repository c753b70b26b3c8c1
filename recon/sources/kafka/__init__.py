"""`kafka` source: the messages of a topic, by the offsets that hold a time range.

Each partition is read with `assign()` from an explicit offset, read_committed
(aborted records never count, transaction markers are never delivered), and
never past its high watermark (the last stable offset) taken before the read.
recon never subscribes, never commits, never joins a group.

Per partition, B(T) is the offset of the first committed data record stamped T
or later, or the high watermark taken before the read when there is none. A
read of [a, b) returns every record delivered at the offsets [B(a), B(b +
out_of_order)), whatever its stamp (the engine places rows by time). Record
timestamps need not grow with offsets: producers' clocks differ, and a retried
batch is appended after newer ones. A record stamped before b can be stored
after the first one stamped b, so the read goes on to the first record stamped
`out_of_order` past b. A read that sees records further out of order than the
allowance says so, and so does one that holds a record of its range stored
past its end (librdkafka prefetched it).

B is found in the records as they are read, not by `offsets_for_times`: the
broker answers with the earliest offset stamped T or later *counting transaction
markers*, and a marker carries the broker's clock at commit. Records older than
their commit (a backfill, MirrorMaker 2 catching up, a lagging exactly-once app)
are stored among markers stamped hours after them, and `offsets_for_times` lands
on the first marker: a range ended there read 74 of 894 records. Its answer c(T)
is only a lower bound of B(T): every offset before c(T) is stamped before T. A
read starts at c(a) and drops each partition's records up to the first stamped a
or later; it ends a partition at the first record stamped b + out_of_order or
later (not kept), or at the high watermark.

Consecutive reads are exact by offsets: a read of [a, b) ends at B(b +
out_of_order), which is where a read of [b + out_of_order, c) starts. That is
how the rest of a range read before is read (`SourceConfig.read_past_end`,
engine/carry.py) without a record twice or missing. (Records appended after a
read may still belong to its range; carry reads ranges younger than the settle
time again.)

The fetch loop (`fetch.py`) is the only per-message Python in recon, and it
only copies fields out of librdkafka's messages; bounds, ID extraction
(`ids.py`) and filtering are columnar. `config.py` holds the source's settings,
`client.py` the consumers' tuning and retries, `offsets.py` offsets by time,
committed offsets and counts, `retention.py` what retention may have deleted.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import cast

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from recon.errors import SourceError
from recon.model import LedgerRead, Window
from recon.sources.kafka.client import new_consumer, reachable
from recon.sources.kafka.config import Config, describe
from recon.sources.kafka.fetch import fetch_records
from recon.sources.kafka.ids import avro_ids, extract_ids, message_headers, without_nul
from recon.sources.kafka.offsets import committed_offsets, count_many, offset_ranges
from recon.sources.kafka.retention import retention_gaps
from recon.sources.kind import Kind

__all__ = ["KIND", "Config", "committed_offsets", "count_many", "describe", "headers_at", "read"]


def read(cfg: Config, window: Window) -> LedgerRead:
    """Every message from the first stamped in `window` to the first `out_of_order` past it."""
    try:
        consumer = new_consumer(cfg)
        try:
            # Records stamped before the end are stored up to `out_of_order` past it.
            ranges = offset_ranges(consumer, cfg, window.widen(timedelta(0), cfg.out_of_order))
        finally:
            consumer.close()
        largest = max((r.end - r.start for r in ranges), default=0)
        consumer = new_consumer(cfg, largest)
        try:
            fetched, disorder = fetch_records(consumer, cfg, ranges, window)
        finally:
            consumer.close()
    except KafkaException as exc:
        raise SourceError(f"{describe(cfg)}: {exc.args[0]}") from exc
    schema_ids = None
    if cfg.schema_registry is not None:
        table, bad, schema_ids = avro_ids(cfg, fetched)
    else:
        table, bad = extract_ids(cfg, fetched)
    table, bad = without_nul(cfg, table, bad)
    gaps, warnings = retention_gaps(cfg, ranges, fetched, window, disorder)
    warnings += disorder.warnings(cfg)
    committed = None
    if cfg.consumer_group:
        committed = committed_offsets(cfg, [r.partition for r in ranges])
        uncommitted = sorted({r.partition for r in ranges} - committed.keys())
        if uncommitted:
            warnings.append(
                f"consumer group {cfg.consumer_group!r} has no committed offset for "
                f"{cfg.topic} partitions {uncommitted}: none of their events can be pending"
            )
    return LedgerRead(describe(cfg), table, bad, gaps, committed, warnings, schema_ids)


def headers_at(cfg: Config, partition: int, offset: int) -> dict[str, str]:
    """The headers of one message (a dead letter's error), read by partition and offset."""
    return headers_many(cfg, [(partition, offset)])[(partition, offset)]


def headers_many(
    cfg: Config, positions: list[tuple[int, int]]
) -> dict[tuple[int, int], dict[str, str]]:
    """The headers of messages by (partition, offset), all read with one consumer.

    Each partition is read from its first wanted offset to its last: dead letters
    are few, and one consumer costs far more than the messages between them.
    """
    wanted: dict[int, set[int]] = {}
    for p, o in positions:
        wanted.setdefault(p, set()).add(o)
    found: dict[tuple[int, int], dict[str, str]] = {}
    if not wanted:
        return found
    consumer = new_consumer(cfg, 1)
    try:
        consumer.assign([TopicPartition(cfg.topic, p, min(offs)) for p, offs in wanted.items()])
        deadline = time.monotonic() + cfg.timeout_s
        while wanted and time.monotonic() < deadline:
            # What librdkafka holds, else the next to arrive: a batch consume waits its
            # whole timeout unless it fills the batch, and dead letters are few.
            msgs = consumer.consume(num_messages=1_000, timeout=0)
            for msg in msgs or consumer.consume(num_messages=1, timeout=0.5):
                # A consumed message (or a partition's end) always has both.
                error, part, offset = msg.error(), cast(int, msg.partition()), msg.offset() or 0
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise SourceError(f"{describe(cfg)}: partition {part}: {error.str()}")
                if error is None and offset in wanted.get(part, ()):
                    found[(part, offset)] = {
                        k: (v or b"").decode("utf-8", "replace") for k, v in message_headers(msg)
                    }
                    wanted[part].discard(offset)
                # At the end of the log (or past the last wanted offset) a partition is done.
                if part in wanted and (not wanted[part] or error is not None):
                    del wanted[part]
    except KafkaException as exc:
        raise SourceError(f"{describe(cfg)}: {exc.args[0]}") from exc
    finally:
        consumer.close()
    lacking = sorted(set(positions) - set(found))
    if lacking:
        p, o = lacking[0]
        raise SourceError(f"{describe(cfg)}: no message at partition {p} offset {o}")
    return found


KIND = Kind(
    "kafka",
    Config,
    read,
    count_many=count_many,
    reachable=reachable,
    exact_ranges=True,
    headers_at=headers_at,
    headers_many=headers_many,
)
