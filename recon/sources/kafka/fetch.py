"""The fetch loop: every record of each partition's range, bounded as it is read."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from recon.errors import SourceError
from recon.model import Window, kafka_place
from recon.sources.gc_pause import gc_paused
from recon.sources.kafka.config import Config, describe
from recon.sources.kafka.ids import picker
from recon.sources.kafka.offsets import OffsetRange, ceil_ms, ms_to_dt
from recon.timeutil import iso

_second = operator.itemgetter(1)
_BATCH = 50_000


class Disorder:
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
            f"{kafka_place(cfg.topic, p, off)} is stamped {iso(ms_to_dt(ms))}, inside the "
            "range, but stored past the first record stamped out_of_order "
            f"({cfg.out_of_order}) after its end: it was not read (nor, maybe, others like "
            "it), and its event may count as lost; raise out_of_order"
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


class Bounds:
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


def fetch_records(
    consumer: Consumer, cfg: Config, ranges: list[OffsetRange], window: Window
) -> tuple[pa.Table, Disorder]:
    """Every record of [B(start), B(end + out_of_order)) of each partition (module doc).

    Columns partition/offset/ts_ms/raw. Also how far out of timestamp order its
    records are (`Disorder`, which looks out for records stamped before the
    window's end delivered past a partition's end).
    """
    reading = _Reading(
        consumer,
        cfg,
        Bounds(ranges, ceil_ms(window.start), ceil_ms(window.end + cfg.out_of_order)),
        Disorder(ceil_ms(window.end)),
        picker(cfg.id),
    )
    if not reading.bounds.todo:
        return _raw_batch([], [], [], []), reading.disorder
    # Even a range whose guessed end is its start is read: records stamped inside it
    # may follow the marker offsets_for_times found.
    consumer.assign(
        [
            TopicPartition(cfg.topic, r.partition, r.start)
            for r in ranges
            if r.partition in reading.bounds.todo
        ]
    )
    with gc_paused():
        reading.run()
    batches = reading.batches
    fetched = pa.Table.from_batches(batches) if batches else _raw_batch([], [], [], [])
    return fetched, reading.disorder


@dataclass
class _Reading:
    """One read's state: its consumer, where each partition ends, what it saw and kept."""

    consumer: Consumer
    cfg: Config
    bounds: Bounds
    disorder: Disorder
    pick: Callable[[Message], bytes | None]  # the bytes that hold a message's event ID
    batches: list[pa.RecordBatch] = field(default_factory=list)

    def run(self) -> None:
        """Consume until every partition reached its end."""
        consumer, cfg, bounds = self.consumer, self.cfg, self.bounds
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
                        f"{describe(cfg)}: no progress for {cfg.timeout_s:g}s reading "
                        f"partitions {sorted(bounds.todo)} (high watermarks: {bounds.todo})"
                    )
                continue
            last_progress = time.monotonic()
            self.take(msgs)

    def take(self, msgs: list[Message]) -> None:
        """One batch: end the partitions it ends, keep the records of each range."""
        consumer, cfg, bounds = self.consumer, self.cfg, self.bounds
        ended: list[int] = []  # at the end of the log, after their records in this batch
        if any(map(Message.error, msgs)):  # in C: errors (partition ends) are rare
            errors = [m for m in msgs if m.error() is not None]
            msgs = [m for m in msgs if m.error() is None]
            ended = [p for p in (_on_error(cfg, m, bounds) for m in errors) if p is not None]
        if not msgs:
            bounds.finish(consumer, cfg, ended)
            return
        # map() over the C methods keeps the per-message work out of the interpreter loop.
        part = np.fromiter(map(Message.partition, msgs), np.int32, len(msgs))
        off = np.fromiter(map(Message.offset, msgs), np.int64, len(msgs))
        # Straight into an array: a list of 500 k ints, then its conversion, cost 30 % more.
        ts = np.fromiter(map(_second, map(Message.timestamp, msgs)), np.int64, len(msgs))
        kept, done, past = bounds.split(part, off, ts)
        if past.size:
            self.disorder.past_end(part[past], off[past], ts[past])
        if kept is not None:  # copy nothing more out of the others
            msgs = list(map(msgs.__getitem__, kept.tolist()))
            part, off, ts = part[kept], off[kept], ts[kept]
        bounds.finish(consumer, cfg, done + ended)
        if msgs:
            self.disorder.see(part, ts)
            self.batches.append(_raw_batch(part, off, ts, list(map(self.pick, msgs))))


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


def _on_error(cfg: Config, msg: Any, bounds: Bounds) -> int | None:
    """The partition whose end of log `msg` is, if that ends its read; else raise."""
    err = msg.error()
    if err.code() == KafkaError._PARTITION_EOF:
        # The end of the log: nothing more can come for this partition. An end
        # offset that is a transaction marker never arrives as a message.
        p = msg.partition()
        return p if p in bounds.todo and msg.offset() >= bounds.todo[p] else None
    raise SourceError(f"{describe(cfg)}: partition {msg.partition()}: {err.str()}")
