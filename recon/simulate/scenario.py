"""Plan a pipeline's traffic with planted faults, columnar (numpy), and keep the truth.

The plan is pure data: every event's origin time, its Kafka partition and
offset, its fate at each hop, and the rows each ledger will hold. `plant.py`
writes it into the real servers; `truth.py` states what each window must show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from recon.timeutil import epoch_us

# Fates of a cohort event (where it vanished, or that it made it).
DELIVERED, LOST_KAFKA, LOST_LAKE, DEAD_LETTERED, PENDING = 0, 1, 2, 3, 4
US = 1_000_000


@dataclass(frozen=True)
class Scenario:
    """What to plant. Rates are fractions of each hour's events; counts are per hour."""

    start: datetime
    hours: int = 3
    events_per_hour: int = 1000
    partitions: int = 4
    seed: int = 7
    kafka_loss: float = 0.0
    # The lake loader's loss rate per hour index (the incident's 30 %), default 0.
    lake_loss: Callable[[int], float] | float = 0.0
    dead_letters_per_hour: int = 0
    webhook_retries: float = 0.0  # extra receipt rows of the same event (gateway retries)
    producer_duplicates: float = 0.0  # extra Kafka messages of the same event
    lake_duplicates: float = 0.0  # the loader writing an event twice
    late_per_hour: int = 0  # lake arrivals after the window's end (within grace)
    orphans_per_hour: int = 0  # events in Kafka and the lake with no receipt
    # The consumer group's committed offsets stop at this time: later messages are pending.
    lag_from: datetime | None = None
    # Kafka records stored up to this many ms out of timestamp order (producers' clocks).
    kafka_disorder_ms: int = 0
    id_prefix: str = "evt"
    # Events received this long after the start on are produced with a new schema
    # version; the lake loader cannot read it: lake loss falls on those events only.
    schema_switch: timedelta | None = None

    @property
    def end(self) -> datetime:
        """End of the planted traffic."""
        return self.start + timedelta(hours=self.hours)

    def lake_loss_at(self, hour: int) -> float:
        """Lake-hop loss rate of hour `hour` (index from the start)."""
        return self.lake_loss(hour) if callable(self.lake_loss) else self.lake_loss


@dataclass
class Plan:
    """The planned events and the rows of each ledger (times in epoch microseconds)."""

    scenario: Scenario
    events: pa.Table  # event_id, origin_us, fate, partition, kafka_us, lake_us, orphan
    receipts: pa.Table  # event_id, received_at
    kafka: pa.Table  # event_id, partition, offset, ts_ms, new_schema (offset order per partition)
    lake: pa.Table  # event_id, ingested_at
    dead_letters: pa.Table  # event_id, ts_ms, error
    committed: dict[int, int] = field(default_factory=dict)


def plan(s: Scenario) -> Plan:
    """Draw the traffic and its faults; deterministic for a given scenario."""
    rng = np.random.default_rng(s.seed)
    start_us = epoch_us(s.start)
    n_hour, hours = s.events_per_hour, s.hours
    n = n_hour * hours
    hour = np.repeat(np.arange(hours), n_hour)
    # Uniform within each hour, whole milliseconds; the first event sits exactly on the start.
    offset_ms = rng.integers(0, 3_600_000, size=n)
    offset_ms[0] = 0
    origin = start_us + hour * 3600 * US + offset_ms * 1000
    ids = np.array([f"{s.id_prefix}-{i:09d}" for i in range(n)], dtype=object)
    fate = np.full(n, DELIVERED, dtype=np.int8)
    _mark(rng, fate, hour, lambda h: s.kafka_loss, LOST_KAFKA)
    # Without a schema switch any event can be lost; with one, only those the loader cannot read.
    unreadable = _new_schema(s, origin) if s.schema_switch is not None else True
    _mark(rng, fate, hour, s.lake_loss_at, LOST_LAKE, among=unreadable)
    _mark_counts(rng, fate, hour, s.dead_letters_per_hour, DEAD_LETTERED)

    kafka_ms = origin // 1000 + rng.integers(5, 800, size=n)
    lake_us = kafka_ms * 1000 + rng.integers(200_000, 3 * US, size=n)
    late = _late(rng, s, origin, fate, hour)
    lake_us[late] = _window_end(origin[late], start_us) + rng.integers(
        1, 10 * 60 * US, size=late.sum()
    )
    orphan = np.zeros(n, dtype=bool)
    ev = _with_orphans(rng, s, ids, origin, fate, kafka_ms, lake_us, orphan, start_us)
    ids, origin, fate, kafka_ms, lake_us, orphan = ev
    partition = (np.arange(len(ids)) % s.partitions).astype(np.int32)
    return _rows(rng, s, ids, origin, fate, partition, kafka_ms, lake_us, orphan)


def _mark(
    rng: np.random.Generator,
    fate: np.ndarray,
    hour: np.ndarray,
    rate: Callable[[int], float],
    value: int,
    among: np.ndarray | bool = True,
) -> None:
    for h in np.unique(hour):
        free = np.flatnonzero((hour == h) & (fate == DELIVERED) & among)
        k = round(rate(int(h)) * (hour == h).sum())
        fate[rng.choice(free, size=min(k, len(free)), replace=False)] = value


def _mark_counts(
    rng: np.random.Generator, fate: np.ndarray, hour: np.ndarray, k: int, value: int
) -> None:
    _mark(rng, fate, hour, lambda h: k / max((hour == h).sum(), 1), value)


def _window_end(origin_us: np.ndarray, start_us: int) -> np.ndarray:
    return start_us + ((origin_us - start_us) // (3600 * US) + 1) * 3600 * US


def _late(
    rng: np.random.Generator, s: Scenario, origin: np.ndarray, fate: np.ndarray, hour: np.ndarray
) -> np.ndarray:
    """Delivered events of each hour's last 10 minutes whose lake write lands after the hour."""
    late = np.zeros(len(origin), dtype=bool)
    end = _window_end(origin, epoch_us(s.start))
    for h in range(s.hours):
        pool = np.flatnonzero((hour == h) & (fate == DELIVERED) & (end - origin < 10 * 60 * US))
        late[rng.choice(pool, size=min(s.late_per_hour, len(pool)), replace=False)] = True
    return late


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _with_orphans(
    rng: np.random.Generator,
    s: Scenario,
    ids: np.ndarray,
    origin: np.ndarray,
    fate: np.ndarray,
    kafka_ms: np.ndarray,
    lake_us: np.ndarray,
    orphan: np.ndarray,
    start_us: int,
) -> Arrays:
    """Append events that reach Kafka and the lake but have no receipt (origin log gap)."""
    k = s.orphans_per_hour * s.hours
    if not k:
        return ids, origin, fate, kafka_ms, lake_us, orphan
    hour = np.repeat(np.arange(s.hours), s.orphans_per_hour)
    o_origin = start_us + hour * 3600 * US + rng.integers(0, 3_500_000, size=k) * 1000
    o_kafka = o_origin // 1000 + rng.integers(5, 800, size=k)
    o_lake = o_kafka * 1000 + rng.integers(200_000, 3 * US, size=k)
    o_ids = np.array([f"orphan-{s.id_prefix}-{i:06d}" for i in range(k)], dtype=object)
    return (
        np.concatenate([ids, o_ids]),
        np.concatenate([origin, o_origin]),
        np.concatenate([fate, np.full(k, DELIVERED, dtype=np.int8)]),
        np.concatenate([kafka_ms, o_kafka]),
        np.concatenate([lake_us, o_lake]),
        np.concatenate([orphan, np.ones(k, dtype=bool)]),
    )


def _rows(
    rng: np.random.Generator,
    s: Scenario,
    ids: np.ndarray,
    origin: np.ndarray,
    fate: np.ndarray,
    partition: np.ndarray,
    kafka_ms: np.ndarray,
    lake_us: np.ndarray,
    orphan: np.ndarray,
) -> Plan:
    n = len(ids)
    # Webhook retries: the same event received again 1-3 s later.
    has_receipt = ~orphan
    retry = has_receipt & (rng.random(n) < s.webhook_retries)
    rec_ids = np.concatenate([ids[has_receipt], ids[retry]])
    rec_us = np.concatenate(
        [origin[has_receipt], origin[retry] + rng.integers(1, 3, retry.sum()) * US]
    )

    # Kafka: everything not lost at the Kafka hop, plus producer retry duplicates 1-50 ms later.
    in_kafka = fate != LOST_KAFKA
    dup = in_kafka & (rng.random(n) < s.producer_duplicates)
    k_idx = np.concatenate([np.flatnonzero(in_kafka), np.flatnonzero(dup)])
    k_ms = np.concatenate([kafka_ms[in_kafka], kafka_ms[dup] + rng.integers(1, 50, dup.sum())])
    k_part = partition[k_idx]
    stored_at = k_ms  # in the partition's log, records are in the order of these
    if s.kafka_disorder_ms:  # a record lands up to that much after one stamped later
        stored_at = k_ms + rng.integers(0, s.kafka_disorder_ms + 1, len(k_ms))
    order = np.lexsort((stored_at, k_part))
    k_idx, k_ms, k_part = k_idx[order], k_ms[order], k_part[order]
    k_off = np.zeros(len(k_idx), dtype=np.int64)
    committed: dict[int, int] = {}
    for p in range(s.partitions):
        sel = np.flatnonzero(k_part == p)
        k_off[sel] = np.arange(len(sel))
        committed[p] = len(sel)
        if s.lag_from is not None:  # the first record stored that is stamped at lag_from
            ahead = np.flatnonzero(k_ms[sel] >= epoch_us(s.lag_from) // 1000)
            committed[p] = int(ahead[0]) if len(ahead) else len(sel)

    # The lagging consumer has not reached these offsets: their events are pending.
    beyond = np.zeros(n, dtype=bool)
    beyond[k_idx[k_off >= np.array([committed[p] for p in k_part], dtype=np.int64)]] = True
    fate = np.where(beyond & (fate != LOST_KAFKA), PENDING, fate).astype(np.int8)

    in_lake = fate == DELIVERED
    ldup = in_lake & (rng.random(n) < s.lake_duplicates)
    lake_ids = np.concatenate([ids[in_lake], ids[ldup]])
    lake_t = np.concatenate([lake_us[in_lake], lake_us[ldup] + US])
    # The loader writes dead letters as it fails, so the topic is in time order.
    dead = np.flatnonzero(fate == DEAD_LETTERED)
    dead = dead[np.argsort(kafka_ms[dead], kind="stable")]

    ts = pa.timestamp("us", tz="UTC")
    events = pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "origin_us": origin,
            "fate": fate,
            "partition": partition,
            "kafka_ms": kafka_ms,
            "lake_us": lake_us,
            "orphan": orphan,
        }
    )
    return Plan(
        scenario=s,
        events=events,
        receipts=pa.table(
            {"event_id": pa.array(rec_ids, pa.string()), "received_at": pa.array(rec_us, ts)}
        ),
        kafka=pa.table(
            {
                "event_id": pa.array(ids[k_idx], pa.string()),
                "partition": k_part,
                "offset": k_off,
                "ts_ms": k_ms,
                # Written with the new schema version (Scenario.schema_switch).
                "new_schema": _new_schema(s, origin[k_idx]),
            }
        ),
        lake=pa.table(
            {"event_id": pa.array(lake_ids, pa.string()), "ingested_at": pa.array(lake_t, ts)}
        ),
        dead_letters=pa.table(
            {
                "event_id": pa.array(ids[dead], pa.string()),
                "ts_ms": kafka_ms[dead] + 1000,
                "error": pa.array(
                    ["SerializationError: unknown schema id 42"] * len(dead), pa.string()
                ),
            }
        ),
        committed=committed,
    )


def _new_schema(s: Scenario, origin_us: np.ndarray) -> np.ndarray:
    """Which events the producer writes with the new schema version (received since the switch)."""
    if s.schema_switch is None:
        return np.zeros(len(origin_us), dtype=bool)
    return np.asarray(origin_us >= epoch_us(s.start + s.schema_switch))
