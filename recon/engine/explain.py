"""One event's path: where each stage saw it, whether it was dead-lettered, where it vanished.

The verdict comes from the same algorithm as the window's numbers: an event's
classification depends only on its own rows (plus the consumer group's
offsets and retention gaps), so the ledgers of its window are read, cut down
to its rows, and reconciled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from recon.config import PipelineConfig
from recon.engine.loss import compute
from recon.engine.reading import ranges, read_range
from recon.errors import ConfigError
from recon.model import LedgerRead, StageInput, Window, kafka_place
from recon.sources import kind_of
from recon.sources.kind import error_text
from recon.store import ResultStore
from recon.timeutil import iso


@dataclass(frozen=True)
class Sighting:
    """One row of the event in a stage's (or a dead-letter sink's) ledger."""

    stage: str
    sink: str | None  # the dead-letter sink's name, for a dead letter
    time: datetime
    location: str
    error: str | None = None  # a dead letter's error header
    schema_id: int | None = None  # a Kafka value's, read with a schema registry

    def as_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {
            "stage": self.stage,
            "dead_letter_sink": self.sink,
            "time": iso(self.time),
            "location": self.location,
            "error": self.error,
            "schema_id": self.schema_id,
        }


@dataclass
class Trace:
    """Where one event went in one window's search ranges."""

    event_id: str
    window: Window
    verdict: str  # delivered | lost | dead_lettered | pending | unverifiable | orphan | unseen
    vanished_at: str | None = None  # the stage it never reached
    sightings: list[Sighting] = field(default_factory=list)
    read_at: datetime | None = None  # when the live sources were read

    @property
    def summary(self) -> str:
        """One line for humans."""
        if self.vanished_at:
            return f"{self.event_id}: {self.verdict.replace('_', '-')} at {self.vanished_at}"
        return f"{self.event_id}: {self.verdict}"

    def as_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {
            "event_id": self.event_id,
            "window": {"start": iso(self.window.start), "end": iso(self.window.end)},
            "verdict": self.verdict,
            "vanished_at": self.vanished_at,
            "sightings": [s.as_dict() for s in self.sightings],
            "read_at": iso(self.read_at) if self.read_at else None,
        }

    def disagreement(self, stored: list[tuple[str, str]]) -> str | None:
        """Why the live sources contradict what the store says of this window, if they do.

        `stored` holds the (stage, outcome) pairs the window's latest stored result
        lists for the event (none: it was not missing). The live sources may have been
        replanted, rewritten or expired since the run: the trace must say so rather
        than show a different story as if it were the stored one.
        """
        live = (self.vanished_at, self.verdict) if self.vanished_at else None
        if stored and live in stored:
            return None
        if not stored and self.verdict == "delivered":
            return None
        was = ", ".join(f"{outcome} at {stage}" for stage, outcome in stored) or "not missing"
        now = self.summary.split(": ", 1)[1]
        return (
            f"the live sources disagree with the stored result of {self.window} ({was}): "
            f"they now say {now}. Their data was replanted, rewritten or expired since the "
            "run; the stored numbers are as the run computed them"
        )


def window_of(
    cfg: PipelineConfig, event_id: str, around: datetime | None, store: ResultStore | None
) -> Window:
    """The window to search.

    The one holding `around` (windows of the configured size counted from the Unix
    epoch: from midnight UTC when the size divides a day);
    without it, the window of the stored result that lists the event as missing,
    as that run cut it (a run's windows start at its --start).
    """
    if around is None and store is not None:
        known = store.missing_event(event_id)
        if known is not None:
            return Window(*known)
    if around is None:
        raise ConfigError(f"{event_id}: not among the stored missing events; give --around T")
    size = cfg.window.size
    epoch = datetime(1970, 1, 1, tzinfo=around.tzinfo)
    start = epoch + ((around - epoch) // size) * size
    return Window(start, start + size)


def _only(read: LedgerRead, event_id: str, span: Window) -> LedgerRead:
    """The event's rows of `read` inside `span` (a Kafka read holds rows stamped past it)."""
    t, at = pc.field("stage_time"), read.table["stage_time"].type
    rows = read.table.filter(
        (pc.field("event_id") == event_id)
        & (t >= pa.scalar(span.start, at))
        & (t < pa.scalar(span.end, at))
    )
    return LedgerRead(read.source, rows, [], read.gaps, read.committed, read.warnings)


def _schema_ids(read: LedgerRead, rows: pa.Table) -> dict[tuple[int, int], int]:
    """(partition, offset) -> schema ID of the messages of `rows` (Kafka read with a registry)."""
    if read.schema_ids is None or not rows.num_rows:
        return {}
    known = read.schema_ids.table
    known = known.filter(pc.is_in(known["offset"], rows["offset"]))
    return {
        (p, o): sid
        for p, o, sid in zip(
            *(known[c].to_pylist() for c in ("partition", "offset", "schema_id")), strict=True
        )
    }


def _place(row: dict[str, Any]) -> str:
    if row["partition"] is None:
        return str(row["location"])
    return kafka_place(row["location"], row["partition"], row["offset"])


def explain(cfg: PipelineConfig, event_id: str, window: Window) -> Trace:
    """Trace `event_id` through the ledgers of `window`'s search ranges, read now."""
    read_at = datetime.now(UTC)
    r = ranges(cfg)
    reads = read_range(cfg, window)
    stages = [
        StageInput(
            s.name,
            _only(s.ledger, event_id, r.origin(window) if i == 0 else r.downstream(window)),
            [_only(d, event_id, r.downstream(window)) for d in s.dead_letters],
        )
        for i, s in enumerate(reads)
    ]
    sinks = {d.name: d for d in cfg.dead_letters}
    sightings = []
    for stage, full in zip(stages, reads, strict=True):
        schema_of = _schema_ids(full.ledger, stage.ledger.table)
        for row in stage.ledger.table.to_pylist():
            sid = schema_of.get((row["partition"], row["offset"]))
            sightings.append(Sighting(stage.name, None, row["stage_time"], _place(row), None, sid))
        sink_cfgs = cfg.dead_letters_of(stage.name)
        for sink_cfg, read, whole in zip(
            sink_cfgs, stage.dead_letters, full.dead_letters, strict=True
        ):
            sink_schema_of = _schema_ids(whole, read.table)
            for row in read.table.to_pylist():
                error = None
                sink = sinks[sink_cfg.name]
                headers_at = kind_of(sink).headers_at
                if headers_at is not None and row["partition"] is not None:
                    headers = headers_at(sink, row["partition"], row["offset"])
                    error = error_text(headers)
                sid = sink_schema_of.get((row["partition"], row["offset"]))
                sightings.append(
                    Sighting(stage.name, sink_cfg.name, row["stage_time"], _place(row), error, sid)
                )
    sightings.sort(key=lambda s: s.time)
    computed = compute(window, stages, r)
    if computed.events:
        missing = computed.missing.to_pylist()
        if not missing:
            return Trace(event_id, window, "delivered", None, sightings, read_at)
        first = missing[0]
        return Trace(event_id, window, first["outcome"], first["stage"], sightings, read_at)
    in_window = [s for s in sightings if window.start <= s.time < window.end]
    verdict = "orphan" if in_window else "unseen"
    return Trace(event_id, window, verdict, None, sightings, read_at)


def stored_outcomes(
    store: ResultStore, pipeline: str, event_id: str, window: Window
) -> list[tuple[str, str]] | None:
    """What the window's latest stored result says of the event.

    The (stage, outcome) pairs listing it missing, [] when it was not; None when
    the window has no stored result.
    """
    windows = store.windows(pipeline)
    if windows.empty or not (windows["window_start"] == window.start).any():
        return None
    rows = store.missing_records(event_id)
    if rows.empty:
        return []
    mine = rows[(rows["pipeline"] == pipeline) & (rows["window_start"] == window.start)]
    return list(zip(mine["stage"], mine["outcome"], strict=True))
