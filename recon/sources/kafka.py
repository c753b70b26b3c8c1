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

The fetch loop is the only per-message Python in recon, and it only copies
fields out of librdkafka's messages; bounds, ID extraction and filtering are
columnar.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar, cast

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from pydantic import Field, field_validator, model_validator

from recon import connections
from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, RetentionGap, Window
from recon.sources import registry
from recon.sources.base import Duration, SourceConfig, ledger_table
from recon.sources.gc_pause import gc_paused
from recon.sources.kind import Kind
from recon.timeutil import epoch_us, iso

T = TypeVar("T")
_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
    }
)
_second = operator.itemgetter(1)
_BATCH = 50_000


class Config(SourceConfig):
    """A topic; the event ID is the key, `header:NAME`, or a field path of the value.

    `json:field.path` reads JSON values; `value:field.path` reads Avro values in
    Confluent wire format, whose schemas come by ID from `schema_registry`
    (recon/sources/registry.py). With Avro values, `time: value:field.path` may
    take each event's time from a timestamp-millis/micros field instead of the
    record's timestamp (which still decides which records a read holds).
    """

    source: Literal["kafka"]
    bootstrap: str
    topic: str
    id: str = "key"
    consumer_group: str | None = None
    # Extra librdkafka settings (security.protocol, sasl.*, ...); ${ENV} for secrets.
    client: dict[str, str | int | bool] = Field(default_factory=dict)
    # An Airflow Connection holding bootstrap.servers and the client settings (its extra).
    connection: str | None = None
    timeout_s: float = Field(default=30, gt=0, le=3600)
    schema_registry: registry.RegistryConfig | None = None
    time: str | None = None
    # How far a record's timestamp may be behind one stored before it in its
    # partition: batching (linger.ms) and retries up to delivery.timeout.ms (2 min).
    out_of_order: Duration = Field(default=timedelta(minutes=5), ge=timedelta(0))

    def read_past_end(self) -> timedelta:
        """A read of [a, b) holds the offsets up to the first record stamped this past b."""
        return self.out_of_order

    @model_validator(mode="before")
    @classmethod
    def _from_connection(cls, data: Any) -> Any:
        """`connection: ID` gives bootstrap and client settings (`client:` keys win)."""

        def fill(conn: connections.Connection) -> dict[str, Any]:
            settings = conn.kafka_settings()
            bootstrap = settings.pop("bootstrap.servers")
            return {"bootstrap": bootstrap, "client": {**settings, **data.get("client", {})}}

        return connections.fill_from(data, "bootstrap", fill)

    @field_validator("id")
    @classmethod
    def _id_spec(cls, value: str) -> str:
        if value == "key" or (
            value.startswith(("header:", "json:", "value:")) and value.split(":", 1)[1]
        ):
            return value
        raise ValueError("id must be 'key', 'header:NAME', 'json:field.path' or 'value:field.path'")

    @model_validator(mode="after")
    def _avro_needs_registry(self) -> Config:
        """`value:` paths are Avro fields: they need the registry, and it needs them."""
        avro = self.id.startswith("value:")
        if avro and self.schema_registry is None:
            raise ValueError("id 'value:...' reads Avro values: give schema_registry")
        if self.schema_registry is not None and not avro:
            raise ValueError("schema_registry is only used with id 'value:field.path'")
        if self.time is not None and not (
            avro and self.time.startswith("value:") and self.time.split(":", 1)[1]
        ):
            raise ValueError("time must be 'value:field.path', with id 'value:field.path'")
        return self


@dataclass(frozen=True)
class OffsetRange:
    """offsets_for_times' offsets of one partition for a time range, and its watermarks.

    `start` and `end` are the earliest offsets stamped at or after the range's start
    and end, counting transaction markers (else `high`): every offset before `start`
    is stamped before the range. A read finds its exact bounds from there.
    """

    partition: int
    start: int
    end: int
    low: int
    high: int


def describe(cfg: Config) -> str:
    """Where this source reads from."""
    return f"kafka topic {cfg.topic} @ {cfg.bootstrap}"


def client_conf(cfg: Config) -> dict[str, Any]:
    """Librdkafka settings shared by recon's consumers and admin clients.

    librdkafka's own log lines go to the `recon.kafka` logger (not raw to stderr),
    each distinct one once a minute: an unreachable broker otherwise printed ~95
    lines per try, and every consumer closing its queues a "Purging" line.
    """
    return {"bootstrap.servers": cfg.bootstrap, "logger": KAFKA_LOG, **cfg.client}


class _Repeats(logging.Filter):
    """Lets a librdkafka line through once a minute, whatever its numbers (timings, ids)."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "BGQUEUE" in text or "Purging" in text:  # a consumer closing: not news
            return False
        key = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        if now - self.last.get(key, -self.every_s) < self.every_s:
            return False
        self.last[key] = now
        return True


KAFKA_LOG = logging.getLogger("recon.kafka")
KAFKA_LOG.addFilter(_Repeats())


def _consumer(cfg: Config, largest_range: int = 100_000) -> Consumer:
    # librdkafka prefetches per partition, also past the range's end: size fetches
    # and the prefetch queue to the largest partition range (~256 B a message), so
    # a small window reads little beyond its end and a big one fetches in bulk.
    # Fetches of 2 MB a partition: 16 MB ones read 2 M messages 2x faster alone, but
    # librdkafka then holds ~800 MB instead of ~270 MB, and in a run the read
    # overlaps the previous chunk's compute, which is what the run waits for.
    prefetch = min(max(largest_range, 1_000), 100_000)
    fetch_bytes = min(max(largest_range * 256, 1 << 20), 2 << 20)
    return Consumer(
        {
            **client_conf(cfg),
            # librdkafka insists on a group id; it is never joined nor committed to.
            "group.id": f"recon-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # librdkafka's default, and what every count assumes: aborted records and
            # transaction markers are never delivered, and the high watermark is the
            # last stable offset. A `client:` setting cannot change it.
            "isolation.level": "read_committed",
            # An offset that vanished under us must fail, never silently jump.
            "auto.offset.reset": "error",
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": fetch_bytes,
            "queued.min.messages": prefetch,
            "queued.max.messages.kbytes": 512 << 10,
            # Once its queue holds `prefetch` messages a partition's next fetch waits this
            # long (librdkafka's default: 1 s), which halved the read of a big range:
            # 2 M messages 4.2 s with it, 2.1 s with 10 ms (the floor's loop: 1.7 s).
            "fetch.queue.backoff.ms": 10,
        }
    )


def _ceil_ms(value: Any) -> int:
    return -(-epoch_us(value) // 1000)


def partitions(consumer: Consumer, cfg: Config) -> list[int]:
    """The topic's partition ids; an absent topic is an error, not an empty ledger."""
    meta = consumer.list_topics(cfg.topic, timeout=cfg.timeout_s)
    topic = meta.topics.get(cfg.topic)
    if topic is None or topic.error is not None:
        reason = topic.error if topic is not None else "no such topic"
        raise SourceError(f"{describe(cfg)}: {reason}")
    return sorted(topic.partitions)


def reachable(cfg: Config) -> None:
    """Fail fast: the brokers answer and the topic exists, within `timeout_s`, or SourceError.

    Checked once per run: an unreachable cluster used to cost every window its own
    timeouts (~32 s and hundreds of log lines each) before the run could exit 3.
    """
    admin = AdminClient(client_conf(cfg))
    try:
        meta = admin.list_topics(cfg.topic, timeout=cfg.timeout_s)
    except KafkaException as exc:
        raise SourceError(
            f"{describe(cfg)}: brokers {cfg.bootstrap} unreachable within "
            f"{cfg.timeout_s:g}s ({exc.args[0]})"
        ) from exc
    topic = meta.topics.get(cfg.topic)
    if topic is None or topic.error is not None:
        reason = topic.error if topic is not None else "no such topic"
        raise SourceError(f"{describe(cfg)}: {reason}")
    if cfg.schema_registry is not None:
        registry.check(cfg.schema_registry)


def _retrying(cfg: Config, call: Callable[[], T]) -> T:
    """`call()`, again while it fails with an error Kafka calls retriable, up to `timeout_s`.

    A partition's leader moves in a rolling restart or a preferred-leader election
    (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE); a fresh topic's leaders are
    not known to every broker at once. Those pass; any other error is raised.
    """
    deadline = time.monotonic() + cfg.timeout_s
    pause = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            # confluent-kafka does not flag every such error retriable (offsets_for_times).
            if not (
                isinstance(error, KafkaError)
                and (error.retriable() or error.code() in _LEADER_MOVING)
            ):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def offset_ranges(consumer: Consumer, cfg: Config, window: Window) -> list[OffsetRange]:
    """Per partition, the offsets from the first stamped in `window` to the first after.

    They hold every record of the window when timestamps grow with offsets and no
    transaction marker is stamped after the records stored behind it.
    """
    return offset_ranges_many(consumer, cfg, [window])[0]


def offset_ranges_many(
    consumer: Consumer, cfg: Config, windows: list[Window]
) -> list[list[OffsetRange]]:
    """`offset_ranges` of each window; each boundary instant is looked up once."""
    parts = partitions(consumer, cfg)
    # Kafka timestamps are whole ms: ts >= start  <=>  ts_ms >= ceil(start in ms).
    instants = sorted({_ceil_ms(t) for w in windows for t in (w.start, w.end)})
    at: dict[int, list[TopicPartition]] = {}

    def offsets_at(ms: int) -> list[TopicPartition]:
        return consumer.offsets_for_times(
            [TopicPartition(cfg.topic, p, ms) for p in parts], cfg.timeout_s
        )

    def watermarks(p: int) -> tuple[int, int]:
        return consumer.get_watermark_offsets(
            TopicPartition(cfg.topic, p), timeout=cfg.timeout_s, cached=False
        )

    for ms in instants:
        found = _retrying(cfg, partial(offsets_at, ms))
        for p, tp in zip(parts, found, strict=True):
            if tp.error is not None:
                raise SourceError(f"{describe(cfg)}: partition {p}: {tp.error}")
        at[ms] = found
    marks = [_retrying(cfg, partial(watermarks, p)) for p in parts]
    per_window = []
    for w in windows:
        starts, ends = at[_ceil_ms(w.start)], at[_ceil_ms(w.end)]
        ranges = []
        for p, s, e, (low, high) in zip(parts, starts, ends, marks, strict=True):
            # -1: no record at or after the timestamp, i.e. the range runs to the end.
            start = high if s.offset < 0 else s.offset
            end = high if e.offset < 0 else e.offset
            ranges.append(OffsetRange(p, max(start, low), max(end, low), low, high))
        per_window.append(ranges)
    return per_window


def read(cfg: Config, window: Window) -> LedgerRead:
    """Every message from the first stamped in `window` to the first `out_of_order` past it."""
    try:
        consumer = _consumer(cfg)
        try:
            # Records stamped before the end are stored up to `out_of_order` past it.
            ranges = offset_ranges(consumer, cfg, window.widen(timedelta(0), cfg.out_of_order))
        finally:
            consumer.close()
        largest = max((r.end - r.start for r in ranges), default=0)
        consumer = _consumer(cfg, largest)
        try:
            fetched, disorder = _fetch(consumer, cfg, ranges, window)
        finally:
            consumer.close()
    except KafkaException as exc:
        raise SourceError(f"{describe(cfg)}: {exc.args[0]}") from exc
    notes: list[str] = []
    if cfg.schema_registry is not None:
        table, bad, notes = _avro_ids(cfg, fetched, window)
    else:
        table, bad = _extract_ids(cfg, fetched)
    table, bad = _without_nul(cfg, table, bad)
    gaps, warnings = _retention_gaps(cfg, ranges, fetched, window, disorder)
    warnings += disorder.warnings(cfg) + notes
    committed = None
    if cfg.consumer_group:
        committed = committed_offsets(cfg, [r.partition for r in ranges])
        uncommitted = sorted({r.partition for r in ranges} - committed.keys())
        if uncommitted:
            warnings.append(
                f"consumer group {cfg.consumer_group!r} has no committed offset for "
                f"{cfg.topic} partitions {uncommitted}: none of their events can be pending"
            )
    return LedgerRead(describe(cfg), table, bad, gaps, committed, warnings)


class _Disorder:
    """How far each partition's record timestamps fell behind those stored before them.

    Also the first record of each partition stamped before `end_ms` (the range's
    end) among those delivered past its partition's end (the first record stamped
    `out_of_order` after the range's end) and under its high watermark: a record
    of the range not read.
    """

    def __init__(self, end_ms: int) -> None:
        self.end_ms = end_ms
        self.newest: dict[int, int] = {}  # the partition's largest timestamp so far (ms)
        self.behind: dict[int, int] = {}  # the most a record was stamped behind it (ms)
        self.unread: dict[int, tuple[int, int]] = {}  # partition: (offset, ms)

    def past_end(self, part: np.ndarray, off: np.ndarray, ts: np.ndarray) -> None:
        """Records delivered past their partition's end."""
        for i in np.flatnonzero(ts < self.end_ms).tolist():
            self.unread.setdefault(int(part[i]), (int(off[i]), int(ts[i])))

    def see(self, part: np.ndarray, ts: np.ndarray) -> None:
        """Records of one batch, in each partition's offset order."""
        for p in np.unique(part).tolist():
            t = ts[part == p]
            newest = np.maximum.accumulate(t)
            before = self.newest.get(p)
            if before is not None:
                newest = np.maximum(newest, before)
            self.newest[p] = int(newest[-1])
            self.behind[p] = max(self.behind.get(p, 0), int((newest - t).max()))

    def warnings(self, cfg: Config) -> list[str]:
        """A note for each partition further out of order than the reader allows."""
        limit_ms = cfg.out_of_order.total_seconds() * 1000
        notes = [
            f"{cfg.topic}[{p}]@{off} is stamped {iso(_ms_to_dt(ms))}, inside the range, but "
            f"stored past the first record stamped out_of_order ({cfg.out_of_order}) after "
            "its end: it was not read (nor, maybe, others like it), and its event may count "
            "as lost; raise out_of_order"
            for p, (off, ms) in sorted(self.unread.items())
        ]
        notes += [
            f"{cfg.topic}[{p}]: a record is stamped {ms / 1000:g}s behind one stored before "
            f"it, more than out_of_order ({cfg.out_of_order}): records stamped before the "
            "range's end but stored after the first one stamped that far past it are not read"
            for p, ms in sorted(self.behind.items())
            if ms > limit_ms
        ]
        return notes


def _first(hits: np.ndarray, default: int) -> int:
    """The index of the first True, else `default`."""
    i = int(hits.argmax()) if hits.size else 0
    return i if hits.size and hits[i] else default


class _Bounds:
    """Where each partition's read starts and ends, found in its records as they come.

    A partition is read from offsets_for_times of `start_ms` (every record before
    it is stamped earlier). Its records up to the first stamped `start_ms` or later,
    B(start), are dropped; the first stamped `stop_ms` or later, B(stop), ends it
    and is dropped too, and so does reaching the high watermark taken before the
    read. `guess` (offsets_for_times of `stop_ms`, else the high watermark) and
    `next` (the offset after the last delivered) only estimate how many records
    may still come.
    """

    def __init__(self, ranges: list[OffsetRange], start_ms: int, stop_ms: int) -> None:
        self.start_ms, self.stop_ms = start_ms, stop_ms
        # The partitions still read, with their high watermark: none is read past it.
        self.todo = {r.partition: r.high for r in ranges if r.start < r.high}
        size = max(self.todo, default=-1) + 1
        self.high = np.zeros(size, np.int64)
        self.guess = np.zeros(size, np.int64)
        self.next = np.zeros(size, np.int64)
        self.started = np.zeros(size, bool)  # B(start) was delivered
        self.active = np.zeros(size, bool)
        for r in ranges:
            if r.partition in self.todo:
                p = r.partition
                self.high[p], self.guess[p], self.next[p] = r.high, r.end, r.start
                self.active[p] = True

    def expected(self) -> int:
        """An upper-bound estimate of the messages still to come before each end.

        Up to the guessed end and one more (the record that ends the partition, or
        its EOF); past the guess (it was a marker stamped after later records), up
        to the high watermark. Markers and aborted records take offsets too.
        """
        p = np.fromiter(self.todo, np.int64, len(self.todo))
        nxt = self.next[p]
        return int((np.where(nxt <= self.guess[p], self.guess[p], self.high[p]) - nxt + 1).sum())

    def split(
        self, part: np.ndarray, off: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray | None, list[int], np.ndarray]:
        """Divide one batch (each partition's records in offset order).

        Returns the indices of the records read (None: all of them), the partitions
        that end with it, and the indices of the records delivered past their
        partition's end and under its watermark.
        """
        np.maximum.at(self.next, part, off + 1)
        high = self.high[part]
        if (
            self.active[part].all()
            and self.started[part].all()
            and int(ts.max()) < self.stop_ms
            and (off < high - 1).all()
        ):
            return None, [], np.empty(0, np.int64)  # inside every partition's range
        keep = np.zeros(len(part), bool)
        done: list[int] = []
        past = [np.empty(0, np.int64)]
        for p in np.unique(part).tolist():
            idx = np.flatnonzero(part == p)
            o, t = off[idx], ts[idx]
            below = int(np.searchsorted(o, self.high[p]))  # never read past the watermark
            if not self.active[p]:  # prefetched after its end, in a batch after the end's
                past.append(idx[:below])
                continue
            first = 0
            if not self.started[p]:  # records before B(start) are stamped before it
                first = _first(t[:below] >= self.start_ms, below)
                self.started[p] = first < below
            last = first + _first(t[first:below] >= self.stop_ms, below - first)
            keep[idx[first:last]] = True
            if last < below:  # B(stop): the first record stamped out_of_order past the end
                done.append(p)
                past.append(idx[last + 1 : below])
            elif o[-1] >= self.high[p] - 1:  # everything under the watermark was delivered
                done.append(p)
        return np.flatnonzero(keep), done, np.concatenate(past)

    def at_high(self, consumer: Consumer, cfg: Config) -> list[int]:
        """Partitions whose position reached the watermark, past markers or aborted records.

        librdkafka moves the position past the markers it reads; their EOF would
        only come with the next fetch, up to fetch.wait.max.ms later.
        """
        if not self.todo:
            return []
        positions = consumer.position([TopicPartition(cfg.topic, p) for p in self.todo])
        return [tp.partition for tp in positions if tp.offset >= self.todo[tp.partition]]

    def finish(self, consumer: Consumer, cfg: Config, done: list[int]) -> None:
        """Stop reading `done` (librdkafka drops what it prefetched of them)."""
        # Once each: a batch can hold a partition's last record and its end event, and
        # librdkafka aborts the process on a partition unassigned twice in one call.
        done = list(dict.fromkeys(p for p in done if p in self.todo))
        if done:
            consumer.incremental_unassign([TopicPartition(cfg.topic, p) for p in done])
            for p in done:
                del self.todo[p]
                self.active[p] = False


def _fetch(
    consumer: Consumer, cfg: Config, ranges: list[OffsetRange], window: Window
) -> tuple[pa.Table, _Disorder]:
    """Every record of [B(start), B(end + out_of_order)) of each partition (module doc).

    Columns partition/offset/ts_ms/raw. Also how far out of timestamp order its
    records are (`_Disorder`, which looks out for records stamped before the
    window's end delivered past a partition's end).
    """
    disorder = _Disorder(_ceil_ms(window.end))
    bounds = _Bounds(ranges, _ceil_ms(window.start), _ceil_ms(window.end + cfg.out_of_order))
    if not bounds.todo:
        return _raw_batch([], [], [], []), disorder
    # Even a range whose guessed end is its start is read: records stamped inside it
    # may follow the marker offsets_for_times found.
    consumer.assign(
        [
            TopicPartition(cfg.topic, r.partition, r.start)
            for r in ranges
            if r.partition in bounds.todo
        ]
    )
    batches: list[pa.RecordBatch] = []
    pick = _picker(cfg.id)
    with gc_paused():
        _fetch_loop(consumer, cfg, bounds, (pick, disorder), batches)
    fetched = pa.Table.from_batches(batches) if batches else _raw_batch([], [], [], [])
    return fetched, disorder


def _fetch_loop(
    consumer: Consumer,
    cfg: Config,
    bounds: _Bounds,
    keep: tuple[Any, _Disorder],
    batches: list[pa.RecordBatch],
) -> None:
    """Consume until every partition of `bounds` reached its end; append to `batches`.

    `keep`: the ID's accessor, and the `_Disorder` that sees every record read.
    """
    pick, disorder = keep
    last_progress = time.monotonic()
    while bounds.todo:
        # A batch consume waits for its whole timeout unless it fills the batch, and
        # how many records may still come is only an estimate (markers and aborted
        # records take offsets; records stamped in the range may follow the marker
        # offsets_for_times found): take what librdkafka holds, up to the estimate,
        # and when it holds nothing, wait for the next message only.
        ask = max(1, min(_BATCH, bounds.expected()))
        msgs = consumer.consume(num_messages=ask, timeout=0)
        if not msgs:  # partitions past their last marker end without waiting for EOF
            bounds.finish(consumer, cfg, bounds.at_high(consumer, cfg))
            if not bounds.todo:
                break
            msgs = consumer.consume(num_messages=1, timeout=0.5)  # the next to arrive
        if not msgs:
            if time.monotonic() - last_progress > cfg.timeout_s:
                raise SourceError(
                    f"{describe(cfg)}: no progress for {cfg.timeout_s:g}s reading partitions "
                    f"{sorted(bounds.todo)} (high watermarks: {bounds.todo})"
                )
            continue
        last_progress = time.monotonic()
        ended: list[int] = []  # at the end of the log, after their records in this batch
        if any(map(Message.error, msgs)):  # in C: errors (partition ends) are rare
            errors = [m for m in msgs if m.error() is not None]
            msgs = [m for m in msgs if m.error() is None]
            ended = [p for p in (_on_error(cfg, m, bounds) for m in errors) if p is not None]
        if not msgs:
            bounds.finish(consumer, cfg, ended)
            continue
        # map() over the C methods keeps the per-message work out of the interpreter loop.
        part = np.fromiter(map(Message.partition, msgs), np.int32, len(msgs))
        off = np.fromiter(map(Message.offset, msgs), np.int64, len(msgs))
        # Straight into an array: a list of 500 k ints, then its conversion, cost 30 % more.
        ts = np.fromiter(map(_second, map(Message.timestamp, msgs)), np.int64, len(msgs))
        kept, done, past = bounds.split(part, off, ts)
        if past.size:
            disorder.past_end(part[past], off[past], ts[past])
        if kept is not None:  # copy nothing more out of the others
            msgs = list(map(msgs.__getitem__, kept.tolist()))
            part, off, ts = part[kept], off[kept], ts[kept]
        bounds.finish(consumer, cfg, done + ended)
        if msgs:
            disorder.see(part, ts)
            batches.append(_raw_batch(part, off, ts, list(map(pick, msgs))))


def _raw_batch(part: Any, off: Any, ts: Any, raw: list[bytes | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array(part, pa.int32()),
            pa.array(off, pa.int64()),
            pa.array(ts, pa.int64()),
            pa.array(raw, pa.binary()),
        ],
        names=["partition", "offset", "ts_ms", "raw"],
    )


def _on_error(cfg: Config, msg: Any, bounds: _Bounds) -> int | None:
    """The partition whose end of log `msg` is, if that ends its read; else raise."""
    err = msg.error()
    if err.code() == KafkaError._PARTITION_EOF:
        # The end of the log: nothing more can come for this partition. An end
        # offset that is a transaction marker never arrives as a message.
        p = msg.partition()
        return p if p in bounds.todo and msg.offset() >= bounds.todo[p] else None
    raise SourceError(f"{describe(cfg)}: partition {msg.partition()}: {err.str()}")


def _headers(msg: Message) -> Iterable[tuple[str, bytes | None]]:
    """A consumed message's headers, (name, bytes or None) pairs.

    confluent-kafka types them as a producer's too: a dict, or str values.
    """
    return cast("Iterable[tuple[str, bytes | None]]", msg.headers() or ())


def _picker(id_spec: str) -> Any:
    """The per-message accessor of the bytes that hold the event ID."""
    if id_spec == "key":
        return Message.key
    if id_spec.startswith("header:"):
        name = id_spec.split(":", 1)[1]

        def header(m: Message) -> bytes | None:
            for key, value in _headers(m):
                if key == name:
                    return value
            return None

        return header
    return Message.value


def _extract_ids(cfg: Config, raw: pa.Table) -> tuple[pa.Table, list[BadRecord]]:
    """Turn raw bytes into event IDs; every record without a usable ID is a BadRecord."""
    json_path = cfg.id.split(":", 1)[1] if cfg.id.startswith("json:") else None
    ids = None if json_path else _plain_ids(raw["raw"])
    bad: list[BadRecord] = []
    if ids is None:
        raw, ids, bad = _checked_ids(cfg, raw, json_path)
    table = ledger_table(ids, _timestamps(raw["ts_ms"]), cfg.topic, raw["partition"], raw["offset"])
    return table, bad


def _without_nul(
    cfg: Config, table: pa.Table, bad: list[BadRecord]
) -> tuple[pa.Table, list[BadRecord]]:
    """Records whose ID holds U+0000 (valid UTF-8, but no store keeps it) are unreadable."""
    nul = pc.fill_null(pc.match_substring(table["event_id"], "\x00"), False)
    if not pc.any(nul).as_py():
        return table, bad
    what = "key" if cfg.id == "key" else cfg.id
    rows = table.filter(nul)
    named = [
        BadRecord(f"{cfg.topic}[{p}]@{o}", f"{what} holds a NUL", time=t)
        for p, o, t in zip(
            *(rows[c].to_pylist() for c in ("partition", "offset", "stage_time")), strict=True
        )
    ]
    return table.filter(pc.invert(nul)), bad + named


def _checked_ids(
    cfg: Config, raw: pa.Table, json_path: str | None
) -> tuple[pa.Table, pa.ChunkedArray, list[BadRecord]]:
    """The records with a usable ID and their IDs; a BadRecord for each of the others."""
    if json_path:
        ids, reasons = _json_ids(raw["raw"], json_path)
    else:
        ids, reasons = _text_ids(raw["raw"], "key" if cfg.id == "key" else cfg.id)
    bad_mask = pc.is_null(ids)
    if not pc.any(bad_mask).as_py():
        return raw, ids, []
    rows = raw.select(["partition", "offset"]).append_column("reason", reasons)
    rows = rows.append_column("t", _timestamps(raw["ts_ms"])).filter(bad_mask)
    bad = [
        BadRecord(f"{cfg.topic}[{p}]@{o}", r, time=t)
        for p, o, r, t in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True)
    ]
    keep = pc.invert(bad_mask)
    return raw.filter(keep), ids.filter(keep), bad


def _avro_ids(
    cfg: Config, raw: pa.Table, window: Window
) -> tuple[pa.Table, list[BadRecord], list[str]]:
    """The IDs (and times) in Avro values; a BadRecord for each value without them; notes.

    A bad record's time is its record timestamp, whatever `time:` says: its
    payload's time is what could not be read.
    """
    assert cfg.schema_registry is not None
    reg = cfg.schema_registry
    time_path = cfg.time.split(":", 1)[1] if cfg.time else None
    decoded = registry.decode(
        raw["raw"], lambda sid: registry.fetch(reg, sid), cfg.id.split(":", 1)[1], time_path
    )
    stamps = _timestamps(raw["ts_ms"])
    notes = _schema_notes(cfg, raw, decoded.schema_id, window)
    bad_mask = pc.is_valid(decoded.reason)
    times = decoded.times if decoded.times is not None else stamps
    if not pc.any(bad_mask).as_py():
        table = ledger_table(decoded.ids, times, cfg.topic, raw["partition"], raw["offset"])
        return table, [], notes
    rows = raw.select(["partition", "offset"]).append_column("reason", decoded.reason)
    rows = rows.append_column("t", stamps).filter(bad_mask)
    bad = [
        BadRecord(f"{cfg.topic}[{p}]@{o}", r, time=t)
        for p, o, r, t in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True)
    ]
    keep = pc.invert(bad_mask)
    kept = raw.filter(keep)
    table = ledger_table(
        decoded.ids.filter(keep),
        times.filter(keep),
        cfg.topic,
        kept["partition"],
        kept["offset"],
    )
    return table, bad, notes


def _schema_notes(cfg: Config, raw: pa.Table, schema_id: np.ndarray, window: Window) -> list[str]:
    """Per schema ID, the messages stamped in `window`: how many, the first and the last.

    Where a new schema version appears is where a producer changed: a loss at
    the next hop that starts there is likely its consumer failing on it.
    """
    ts = raw["ts_ms"].to_numpy()
    inside = (ts >= _ceil_ms(window.start)) & (ts < _ceil_ms(window.end)) & (schema_id >= 0)
    if not inside.any():
        return []
    part, off = raw["partition"].to_numpy(), raw["offset"].to_numpy()
    notes = []
    for sid in np.unique(schema_id[inside]).tolist():
        rows = np.flatnonzero(inside & (schema_id == sid))
        order = rows[np.lexsort((off[rows], part[rows], ts[rows]))]
        first, last = order[0], order[-1]
        notes.append(
            f"{cfg.topic}: schema id {sid} first seen {iso(_ms_to_dt(int(ts[first])))} at "
            f"[{part[first]}]@{off[first]}, last {iso(_ms_to_dt(int(ts[last])))} at "
            f"[{part[last]}]@{off[last]} ({len(rows):,} message{'s' if len(rows) > 1 else ''})"
        )
    return notes


def _timestamps(ts_ms: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(pc.multiply(ts_ms, 1000), pa.timestamp("us", tz="UTC"))


def _plain_ids(raw: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The IDs when every key (or header) is present, non-empty and UTF-8; else None.

    The usual case costs a check and no copy: the bytes are reinterpreted as text
    (DuckDB's decode of a 5 M-message read made a second copy of them beside the
    first). A read with any unusable record goes through `_text_ids`, which names
    each one.
    """
    if raw.null_count or (len(raw) and pc.min(pc.binary_length(raw)).as_py() == 0):
        return None
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:  # some record is not UTF-8: `_text_ids` reports which
        return None


def _text_ids(raw: pa.ChunkedArray, what: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    con = duckdb.connect()
    con.register("raw", pa.table({"raw": raw}))
    # Invalid UTF-8 and empty IDs are unusable, like a missing key or header.
    result = con.sql(
        """
        SELECT CASE WHEN raw IS NULL OR octet_length(raw) = 0 OR NOT utf8_ok THEN NULL
                    ELSE decode(raw) END AS id,
               CASE WHEN raw IS NULL THEN 'no ' || $what
                    WHEN octet_length(raw) = 0 THEN 'empty ' || $what
                    WHEN NOT utf8_ok THEN $what || ' is not valid UTF-8' END AS reason
        FROM (SELECT raw, try(decode(raw)) IS NOT NULL AS utf8_ok FROM raw)
        """,
        params={"what": what},  # a header's name is the user's text: never spliced in
    ).to_arrow_table()
    return result["id"], result["reason"]


def _json_ids(raw: pa.ChunkedArray, path: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    con = duckdb.connect()
    con.register("raw", pa.table({"raw": raw}))
    json_path = "$." + path
    result = con.sql(
        """
        WITH t AS (
          SELECT raw, try(decode(raw)) AS txt FROM raw
        ), j AS (
          SELECT raw, txt, txt IS NOT NULL AND json_valid(txt) AS ok FROM t
        ), v AS (
          SELECT raw, ok, CASE WHEN ok THEN json_extract(txt, $path) END AS node FROM j
        )
        SELECT CASE WHEN ok AND node IS NOT NULL AND json_type(node) IN ('VARCHAR', 'BIGINT',
                    'UBIGINT') AND length(json_extract_string(node, '$')) > 0
                    THEN json_extract_string(node, '$') END AS id,
               CASE WHEN raw IS NULL THEN 'no value'
                    WHEN NOT ok THEN 'value is not valid JSON'
                    WHEN node IS NULL OR json_type(node) = 'NULL' THEN 'no field ' || $name
                    WHEN json_type(node) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT')
                      THEN 'field ' || $name || ' is a ' || json_type(node)
                    WHEN length(json_extract_string(node, '$')) = 0
                      THEN 'field ' || $name || ' is empty' END AS reason
        FROM v
        """,
        params={"path": json_path, "name": path},
    ).to_arrow_table()
    return result["id"], result["reason"]


def _retention_gaps(
    cfg: Config,
    ranges: list[OffsetRange],
    fetched: pa.Table,
    window: Window,
    disorder: _Disorder,
) -> tuple[list[RetentionGap], list[str]]:
    """Partitions where records of the range may already have been deleted; notes.

    offsets_for_times only sees records that still exist: when it lands on the
    low watermark of a partition that has lost records (low > 0), the deleted
    ones may have belonged to the range, up to the earliest stamp of the records
    still there. In a partition whose records the read saw out of order, a
    deleted one may be stamped after that by as much (up to `out_of_order`); in
    one whose records are in order, a missing event stamped after it is lost.
    Under time-only retention they are older than the topic's retention.ms
    (`deletion_horizon`), which bounds the gap: a partition emptied by retention
    long ago (an idle one) leaves none in a recent window, where it used to turn
    every loss of the stage into `unverifiable`.
    """
    suspects = [r for r in ranges if r.low > 0 and r.start <= r.low]
    if not suspects:
        return [], []
    horizon, notes = deletion_horizon(cfg)
    gaps = []
    for r in suspects:
        until = window.end
        mine = fetched.filter(pc.equal(fetched["partition"], r.partition))
        if mine.num_rows:
            seen = timedelta(milliseconds=disorder.behind.get(r.partition, 0))
            slack = min(seen, cfg.out_of_order)
            until = min(until, _ms_to_dt(pc.min(mine["ts_ms"]).as_py()) + slack)
        if horizon is not None:
            until = min(until, horizon)
        if until > window.start:
            gaps.append(RetentionGap(cfg.topic, r.partition, r.low, until))
    return gaps, notes


# Allowance for the broker's clock and retention's check interval (log.retention.check.interval.ms).
_RETENTION_SLACK = timedelta(minutes=15)
_CENTURY_MS = 100 * 365 * 86_400_000


def deletion_horizon(cfg: Config) -> tuple[datetime | None, list[str]]:
    """The newest record time retention can have deleted, when the topic's config bounds it.

    With cleanup.policy=delete, a retention.ms and no retention.bytes, Kafka
    deletes a segment only once its newest record is older than retention.ms.
    Size-based retention, compaction or infinite retention give no bound (the
    deleted records may be of any age). Records removed with the admin API's
    delete-records, or under a shorter retention.ms set before, break the bound
    unseen: their events are reported as lost, not unverifiable.
    """
    admin = AdminClient(client_conf(cfg))
    resource = ConfigResource(ResourceType.TOPIC, cfg.topic)
    try:
        found = admin.describe_configs([resource], request_timeout=cfg.timeout_s)[resource]
        entries = found.result(timeout=cfg.timeout_s)
    except (KafkaException, TimeoutError) as exc:
        reason = exc.args[0] if exc.args else f"no answer within {cfg.timeout_s:g}s"
        return None, [
            f"{cfg.topic}: topic config unreadable ({reason}): records deleted before the "
            "low watermark may be of any age"
        ]
    policy = {p.strip() for p in entries["cleanup.policy"].value.split(",")}
    retention_ms = int(entries["retention.ms"].value)
    retention_bytes = int(entries["retention.bytes"].value)
    if policy != {"delete"} or not 0 <= retention_ms < _CENTURY_MS or retention_bytes >= 0:
        return None, []  # (Long.MAX_VALUE is a common "forever")
    return datetime.now(UTC) - timedelta(milliseconds=retention_ms) + _RETENTION_SLACK, []


def _ms_to_dt(ms: int) -> Any:
    return pa.scalar(ms * 1000, pa.timestamp("us", tz="UTC")).as_py()


def committed_offsets(cfg: Config, parts: list[int]) -> dict[int, int]:
    """The consumer group's committed offset of each partition that has one.

    Read by a consumer that carries the group's id but never subscribes, so recon
    never joins the production group. (The admin API's ListConsumerGroupOffsets
    made librdkafka 2.16 crash with SIGSEGV when the coordinator answered
    NOT_COORDINATOR: a new broker, a coordinator moving.) Pending means
    *provably* in flight: a partition without a committed offset proves nothing,
    so its missing events stay lost (and a mistyped group name shows up as loss,
    with a note, rather than hiding it as pending); a partition whose offset
    cannot be read is an error, not a partition without one.
    """
    if cfg.consumer_group is None:
        raise TypeError("committed offsets need a consumer group")
    consumer = Consumer(
        {**client_conf(cfg), "group.id": cfg.consumer_group, "enable.auto.commit": False}
    )
    try:
        wanted = [TopicPartition(cfg.topic, p) for p in parts]
        found = _retrying(cfg, functools.partial(consumer.committed, wanted, cfg.timeout_s))
    except KafkaException as exc:
        raise SourceError(
            f"{describe(cfg)}: committed offsets of group {cfg.consumer_group}: {exc.args[0]}"
        ) from exc
    finally:
        consumer.close()
    for tp in found:
        if tp.error is not None:
            raise SourceError(
                f"{describe(cfg)}: committed offset of group {cfg.consumer_group}, partition "
                f"{tp.partition}: {tp.error}"
            )
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def count_many(cfg: Config, windows: list[Window]) -> list[int]:
    """Offsets in each window, from one consumer, without reading a message.

    An estimate from offsets_for_times alone (`OffsetRange`): transaction markers
    and compacted records take offsets too, so it is an upper bound when
    timestamps grow with offsets. It is not one for records stored among markers
    stamped after them (a backfilled transactional topic): offsets_for_times
    lands on those markers, and the count can be far too low. `read` finds the
    exact bounds.
    """
    try:
        consumer = _consumer(cfg)  # a bad `client:` setting raises here
    except KafkaException as exc:
        raise SourceError(f"{describe(cfg)}: {exc.args[0]}") from exc
    try:
        return [
            sum(r.end - r.start for r in ranges)
            for ranges in offset_ranges_many(consumer, cfg, windows)
        ]
    except KafkaException as exc:
        raise SourceError(f"{describe(cfg)}: {exc.args[0]}") from exc
    finally:
        consumer.close()


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
    consumer = _consumer(cfg, 1)
    try:
        consumer.assign([TopicPartition(cfg.topic, p, min(offs)) for p, offs in wanted.items()])
        deadline = time.monotonic() + cfg.timeout_s
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1_000, timeout=0.5):
                # A consumed message (or a partition's end) always has both.
                error, part, offset = msg.error(), cast(int, msg.partition()), msg.offset() or 0
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise SourceError(f"{describe(cfg)}: partition {part}: {error.str()}")
                if error is None and offset in wanted.get(part, ()):
                    found[(part, offset)] = {
                        k: (v or b"").decode("utf-8", "replace") for k, v in _headers(msg)
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
