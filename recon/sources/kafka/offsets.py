"""Offsets and times: the offsets of a time range, a group's committed offsets, counts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition

from recon.errors import SourceError
from recon.model import Window
from recon.sources.kafka.client import client_conf, new_consumer, partitions, retrying
from recon.sources.kafka.config import Config, describe
from recon.timeutil import epoch_us


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


def ceil_ms(value: Any) -> int:
    """An instant in whole ms, rounded up (stamps are whole ms: ts >= t <=> ts_ms >= this)."""
    return -(-epoch_us(value) // 1000)


def ms_to_dt(ms: int) -> Any:
    """A Kafka stamp as a UTC datetime."""
    return pa.scalar(ms * 1000, pa.timestamp("us", tz="UTC")).as_py()


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
    instants = sorted({ceil_ms(t) for w in windows for t in (w.start, w.end)})
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
        found = retrying(cfg, partial(offsets_at, ms))
        for p, tp in zip(parts, found, strict=True):
            if tp.error is not None:
                raise SourceError(f"{describe(cfg)}: partition {p}: {tp.error}")
        at[ms] = found
    marks = [retrying(cfg, partial(watermarks, p)) for p in parts]
    per_window = []
    for w in windows:
        starts, ends = at[ceil_ms(w.start)], at[ceil_ms(w.end)]
        ranges = []
        for p, s, e, (low, high) in zip(parts, starts, ends, marks, strict=True):
            # -1: no record at or after the timestamp, i.e. the range runs to the end.
            start = high if s.offset < 0 else s.offset
            end = high if e.offset < 0 else e.offset
            ranges.append(OffsetRange(p, max(start, low), max(end, low), low, high))
        per_window.append(ranges)
    return per_window


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
        found = retrying(cfg, functools.partial(consumer.committed, wanted, cfg.timeout_s))
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
        consumer = new_consumer(cfg)  # a bad `client:` setting raises here
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
