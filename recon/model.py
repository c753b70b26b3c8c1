"""Shared types: what we reconcile (Window), what a ledger read returns, what a hop measured.

Every other module speaks these types; nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import pyarrow as pa
import pyarrow.compute as pc

from recon.timeutil import as_utc, iso

# The columns every source reader returns. `location` says where the row lives
# (table, parquet file, topic); `partition`/`offset` are set for Kafka rows.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("stage_time", pa.timestamp("us", tz="UTC")),
        pa.field("location", pa.dictionary(pa.int32(), pa.string())),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
    ]
)

# The name end-to-end totals go under, beside the stages (never a stage's name).
END_TO_END = "end_to_end"
# Outcome codes of a missing event, in the order of their precedence in a hop.
OUTCOMES = ("dead_lettered", "pending", "unverifiable", "lost")
# A missing event: the hop it vanished at, why, and where it was last seen.
MISSING_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("stage", pa.string()),
        ("outcome", pa.string()),
        ("origin_time", pa.timestamp("us", tz="UTC")),
        ("last_stage", pa.string()),
        ("last_seen_at", pa.timestamp("us", tz="UTC")),
        ("last_location", pa.string()),
    ]
)

# Kafka values in Confluent wire format: each message's schema ID (from its 5-byte
# header, also for messages without a usable event ID), by place and record time.
SCHEMA_ID_ROWS = pa.schema(
    [
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("schema_id", pa.int64()),
    ]
)

COUNTERS = (
    "upstream",
    "arrived",
    "lost",
    "dead_lettered",
    "pending",
    "unverifiable",
    "late",
    "duplicates",
    "orphans",
    "unreadable",
)


class Status(StrEnum):
    """A window's status (status.window_status); equal to its name as a string."""

    OK = "ok"
    BREACH = "breach"
    INCOMPLETE = "incomplete"
    ERROR = "error"


class RunStatus(StrEnum):
    """A run's status in the store: `running`, then by its exit code, or how it died."""

    RUNNING = "running"
    OK = "ok"
    BREACH = "breach"
    ERROR = "error"
    FAILED = "failed"  # died of an error it could report (a store lost mid-run)
    ABANDONED = "abandoned"  # killed without a word: its heartbeat went stale


@dataclass(frozen=True, order=True)
class Window:
    """A half-open UTC time range [start, end) that checks itself."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_utc(self.start))
        object.__setattr__(self, "end", as_utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"window end {iso(self.end)} is not after start {iso(self.start)}")

    def split(self, size: timedelta) -> list[Window]:
        """Consecutive windows of `size` covering this one; the last may be shorter."""
        if size <= timedelta(0):
            raise ValueError("window size must be positive")
        windows, cursor = [], self.start
        while cursor < self.end:
            windows.append(Window(cursor, min(cursor + size, self.end)))
            cursor += size
        return windows

    def widen(self, before: timedelta, after: timedelta) -> Window:
        """The same window, extended by `before` at the start and `after` at the end."""
        return Window(self.start - before, self.end + after)

    def __str__(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"


@dataclass(frozen=True, order=True)
class Shard:
    """Share `index` of `count` of a window: the events whose ID hashes to it (`sources.sharding`).

    Every row of an event is in the shard of its ID, so a window's counters are
    the sums of its shards'; rows without a usable ID (unreadable) count in shard 0.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= index < count")

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


def kafka_place(topic: str, partition: object, offset: object) -> str:
    """Where a Kafka record lives, as every report names it: `topic[partition]@offset`."""
    return f"{topic}[{partition}]@{offset}"


@dataclass(frozen=True)
class BadRecord:
    """A row a reader saw without a usable event ID or time: counted, never dropped."""

    where: str  # "topic[partition]@offset", "file:line", "file (3 rows)"
    reason: str
    count: int = 1
    time: datetime | None = None  # when known: the window it counts in

    def counts_in(self, window: Window) -> bool:
        """Whether the row is counted in `window`: exactly one window of a day counts it.

        The window whose [start, end) holds its time; a row without any time (a
        NULL time column, a lake without time keys) is in no window and counts
        in the one that holds midnight UTC, once for each day a run covers.
        """
        if self.time is not None:
            return window.start <= self.time < window.end
        first_midnight = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
        if first_midnight < window.start:
            first_midnight += timedelta(days=1)
        return first_midnight < window.end


@dataclass(frozen=True)
class RetentionGap:
    """Kafka records of the read range may be deleted already (retention, delete_records).

    Records before `low_watermark` no longer exist; `until` bounds their stamps
    (the earliest retained record's, plus as far out of order as the read saw
    the partition's records, at most `out_of_order`; or the topic's time
    retention): events older than it may have been in the deleted part, so their
    absence cannot be judged.
    """

    topic: str
    partition: int
    low_watermark: int
    until: datetime

    def __str__(self) -> str:
        return (
            f"{self.topic}[{self.partition}]: records before offset {self.low_watermark} were "
            f"deleted; absence of events before {iso(self.until)} cannot be judged"
        )


@dataclass(frozen=True)
class SchemaIds:
    """The schema ID of each message a Kafka read saw (SCHEMA_ID_ROWS), and its topic."""

    topic: str
    table: pa.Table

    def since(self, start: datetime) -> SchemaIds:
        """The messages stamped at or after `start` (what a carried read keeps)."""
        at = pa.scalar(start, self.table["time"].type)
        return SchemaIds(self.topic, self.table.filter(pc.greater_equal(self.table["time"], at)))

    def then(self, later: SchemaIds | None) -> SchemaIds:
        """These messages, then those of the read after them."""
        if later is None:
            return self
        return SchemaIds(self.topic, pa.concat_tables([self.table, later.table]))


@dataclass
class LedgerRead:
    """What one reader returns for one time range."""

    source: str  # a human description, e.g. "kafka topic events @ 127.0.0.1:9092"
    table: pa.Table  # LEDGER_SCHEMA
    bad_records: list[BadRecord] = field(default_factory=list)
    gaps: list[RetentionGap] = field(default_factory=list)
    # Kafka only: committed offset per partition of the stage's consumer group.
    committed: dict[int, int] | None = None
    warnings: list[str] = field(default_factory=list)  # shown in the window's notes
    # Kafka with a schema registry: every message's schema ID.
    schema_ids: SchemaIds | None = None

    @property
    def unreadable(self) -> int:
        """Rows seen but not usable (no usable event ID or time)."""
        return sum(bad.count for bad in self.bad_records)


def empty_ledger() -> pa.Table:
    """An empty table in the ledger schema."""
    return LEDGER_SCHEMA.empty_table()


@dataclass
class StageMetrics:
    """The counters of one hop (or of the origin, or end to end) for one window."""

    stage: str
    upstream: int = 0
    arrived: int = 0
    lost: int = 0
    dead_lettered: int = 0
    pending: int = 0
    unverifiable: int = 0
    late: int = 0
    duplicates: int = 0
    orphans: int = 0
    unreadable: int = 0
    latency_ms: dict[str, float | None] = field(
        default_factory=lambda: dict.fromkeys(("p50", "p95", "p99", "max"))
    )
    breach: bool = False

    @property
    def loss_rate(self) -> float:
        """Lost / upstream; 0 when nothing went in."""
        return self.lost / self.upstream if self.upstream else 0.0

    @property
    def unreadable_rate(self) -> float:
        """Unreadable / (unreadable + upstream): the share of rows recon could not judge.

        1 when only unreadable rows were seen (an origin whose times cannot be
        parsed has an empty cohort: nothing of it can be called ok).
        """
        seen = self.unreadable + self.upstream
        return self.unreadable / seen if seen else 0.0

    def as_dict(self) -> dict[str, object]:
        """The JSON report's shape for a stage entry."""
        counters = {name: getattr(self, name) for name in COUNTERS}
        return {
            "stage": self.stage,
            **counters,
            "loss_rate": self.loss_rate,
            "unreadable_rate": self.unreadable_rate,
            "latency_ms": dict(self.latency_ms),
            "breach": self.breach,
        }


@dataclass(frozen=True)
class AlertState:
    """What was last said about one (pipeline, stage)."""

    firing: bool = False
    last_notified_at: datetime | None = None


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict on one stage of one window.

    `name` is set for an expectation the user added to the suite (its `meta.name`,
    else its type, column and bounds); recon's own, generated from the thresholds,
    have none. `threshold` is its bound (max_value, else min_value; 0 without one).
    """

    stage: str
    expectation: str
    column: str
    threshold: float
    observed: float | None
    success: bool
    name: str | None = None


@dataclass
class Computed:
    """One window as the engine computed it, before the gate: `error` set means no numbers.

    `dead_letter_errors`: per stage, its dead-lettered events counted by the error
    text their dead letters carry (a Kafka header `error`, `x-error` or `exception`).
    """

    pipeline: str
    window: Window
    events: int | None = None
    stages: list[StageMetrics] = field(default_factory=list)
    end_to_end: StageMetrics | None = None
    missing: pa.Table | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    dead_letter_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    schema_ids: list[SchemaIdUse] = field(default_factory=list)  # Kafka stages with a registry


@dataclass
class SchemaIdUse:
    """One schema ID on one Kafka stage in one window, and what became of its events.

    `messages` (and the first and last of them, by record time, partition, offset)
    are the messages stamped in the window with this ID in their wire header,
    readable or not. `events` are the window's cohort events seen at the stage
    in a message with this ID; `lost_next` of them are lost at the hop into
    `next_stage`. `first_seen`: no earlier window of the pipeline holds a
    message with this ID on this stage while some holds messages of the stage
    (None: nothing earlier is known, so nothing is new); decided when the
    window is stored (runner.py), from the windows stored before it.
    """

    stage: str
    topic: str
    schema_id: int
    messages: int
    first_time: datetime | None
    first_partition: int | None
    first_offset: int | None
    last_time: datetime | None
    last_partition: int | None
    last_offset: int | None
    events: int
    next_stage: str | None
    lost_next: int
    first_seen: bool | None = None

    @property
    def lost_rate(self) -> float:
        """Lost at the next hop / events; 0 when no event carried it."""
        return self.lost_next / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, object]:
        """The JSON report's shape."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("first_time", "last_time"):
            out[k] = iso(out[k]) if out[k] is not None else None
        return {**out, "lost_rate": self.lost_rate}


@dataclass
class WindowResult:
    """Everything recon concluded about one window; `error` set means no numbers."""

    pipeline: str
    window: Window
    status: Status
    events: int | None = None
    stages: list[StageMetrics] = field(default_factory=list)
    end_to_end: StageMetrics | None = None
    missing: pa.Table | None = None
    notes: list[str] = field(default_factory=list)  # unreadable rows, retention gaps
    schema_ids: list[SchemaIdUse] = field(default_factory=list)  # Kafka stages with a registry
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None
    window_id: str | None = None  # its row in the results store, once stored
    dead_letter_errors: dict[str, dict[str, int]] = field(default_factory=dict)  # see Computed

    def as_dict(self) -> dict[str, object]:
        """The JSON report's shape for one window (DESIGN.md contract)."""
        return {
            "start": iso(self.window.start),
            "end": iso(self.window.end),
            "status": self.status,
            "events": self.events,
            "stages": [s.as_dict() for s in self.stages],
            "end_to_end": self.end_to_end.as_dict() if self.end_to_end else None,
            "run_id": self.run_id,
            "window_id": self.window_id,
            "error": self.error,
            "notes": list(self.notes),
            "schema_ids": [u.as_dict() for u in self.schema_ids],
            "expectations": [dataclasses.asdict(e) for e in self.expectations],
            "dead_letter_errors": {s: dict(e) for s, e in self.dead_letter_errors.items()},
        }


@dataclass
class StageInput:
    """One stage's reads: its ledger and the dead-letter sinks of its inbound hop."""

    name: str
    ledger: LedgerRead
    dead_letters: list[LedgerRead] = field(default_factory=list)


@dataclass(frozen=True)
class Ranges:
    """How far around a window each side is searched."""

    grace: timedelta = timedelta(minutes=30)
    skew: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        # The orphan check finds a row's own window among the downstream ranges that
        # hold it, which needs each window inside its own downstream range.
        if self.grace < timedelta(0) or self.skew < timedelta(0):
            raise ValueError(f"grace and skew must not be negative: {self}")

    def origin(self, w: Window) -> Window:
        """Origin rows that can match the window's events (retries, orphan checks)."""
        return w.widen(self.grace, self.skew)

    def downstream(self, w: Window) -> Window:
        """Downstream rows of the window's events: late (grace) and skewed arrivals."""
        return w.widen(self.skew, self.grace)
