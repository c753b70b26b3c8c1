"""Records retention may have deleted from a range, and how old they can be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from recon.model import RetentionGap, Window
from recon.sources.kafka.client import client_conf
from recon.sources.kafka.config import Config
from recon.sources.kafka.fetch import Disorder
from recon.sources.kafka.offsets import OffsetRange, ms_to_dt


def retention_gaps(
    cfg: Config,
    ranges: list[OffsetRange],
    fetched: pa.Table,
    window: Window,
    disorder: Disorder,
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
            until = min(until, ms_to_dt(pc.min(mine["ts_ms"]).as_py()) + slack)
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
