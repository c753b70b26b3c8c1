"""A window too big for one worker: reconciled as K shards by the hash of the event ID, merged.

Shard k of K holds every row, at every stage and dead-letter sink, of the
events whose canonical ID hashes to k (`sources.sharding`: MD5, stable across
versions and machines, the same in PostgreSQL). Every counter of the model is
a count of events (or of their rows) judged from that event's own rows and
from what is the same in every shard (the window, its ranges, committed
offsets and retention gaps, which describe the source and are kept whole), so
a window's counters are the sums of its shards':

- cohort, upstream, arrived, lost, dead_lettered, pending, unverifiable, late:
  one event each, and an event is in one shard;
- duplicates (rows minus distinct events) and orphans (distinct IDs): per ID;
- unreadable: rows without a usable ID belong to no event: they count in shard 0
  only (each shard's read sees them; `sharding.keep` drops them elsewhere).

Latency percentiles are merged exactly: each shard keeps its arrived events'
latencies sorted (8 bytes an event and hop), and the merge finds the value at
each percentile's position in their union by bisection over memory-mapped
files (`sightings.picked_from_sorted`): the same value the unsharded window
reports. Missing events are concatenated in the unsharded order (hop, ID). The
notes are rebuilt from merged numbers (clock and stall notes) and shard 0's
read notes (gaps, warnings, unreadable rows: the same as the unsharded read's).

A shard's partial result travels as files (`save`/`load`): a JSON of its
counters, a parquet of its missing events, one .npy of latencies per hop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recon.config import PipelineConfig
from recon.engine import schemas
from recon.engine.dead_letters import dead_letter_errors
from recon.engine.heap import bound_memory, release_freed_memory
from recon.engine.loss import (
    clock_notes,
    compute_many,
    end_to_end_of,
)
from recon.engine.notes import read_notes, stall_notes
from recon.engine.phases import Phases
from recon.engine.reading import ranges, read_range
from recon.engine.sightings import picked_from_sorted
from recon.model import (
    COUNTERS,
    MISSING_SCHEMA,
    Computed,
    LedgerRead,
    SchemaIdUse,
    Shard,
    StageInput,
    StageMetrics,
    Window,
    empty_ledger,
)
from recon.timeutil import iso, parse_instant

_COUNTS = "partial.json"
_MISSING = "missing.parquet"


@dataclass
class Partial:
    """What one shard of a window found: its counters and what the merge needs besides."""

    window: Window
    shard: Shard
    events: int
    stages: list[StageMetrics]  # origin first; a hop's latency_ms is the shard's own
    missing: pa.Table  # MISSING_SCHEMA
    latencies_us: list[np.ndarray]  # per hop 1..n-1: arrived events' latencies, sorted
    stalled: dict[str, int]  # per hop stage: in flight past `stall`, charged as lost
    early: list[tuple[int, int]]  # per hop: seen before their origin time, the earliest (µs)
    read_notes: list[str]  # gaps, warnings, unreadable rows (all of them in shard 0)
    committed: dict[str, dict[int, int] | None]  # per stage: its group's committed offsets
    # Per Kafka stage and schema ID: the messages are the whole read's (the same in
    # every shard), the events and their loss next the shard's own.
    schema_ids: list[SchemaIdUse] = field(default_factory=list)
    # Per stage: its dead-lettered events by error text (each event in one shard only).
    dead_letter_errors: dict[str, dict[str, int]] = field(default_factory=dict)


def reconcile_shard(
    cfg: PipelineConfig, window: Window, shard: Shard, now: datetime, phases: Phases | None = None
) -> Partial:
    """The shard's rows of every ledger read, and the window computed from them.

    A source that cannot be read raises its SourceError: a shard has no error
    result (its task fails and is retried; the window is merged only from all K).
    """
    phases = phases if phases is not None else Phases()
    bound_memory()  # a shard exists to bound a task's memory
    stages = read_range(cfg, window, phases, shard=shard)
    release_freed_memory()
    with phases.timed("compute"):
        return partial(cfg, window, shard, stages, now)


def partial(
    cfg: PipelineConfig, window: Window, shard: Shard, stages: list[StageInput], now: datetime
) -> Partial:
    """The window computed from the shard's rows of every ledger (`stages`)."""
    res = cfg.resources
    big = sum(s.ledger.table.num_rows for s in stages) > res.max_rows_per_read * len(stages)
    (c,) = compute_many(
        [window],
        stages,
        ranges(cfg),
        res.duckdb_memory_big_window if big else res.duckdb_memory,
        [now >= window.end + cfg.window.stall],
        latencies=True,
    )
    return Partial(
        window,
        shard,
        c.events,
        c.stages,
        c.missing,
        c.latencies_us or [],
        c.stalled,
        c.early,
        read_notes(stages, window),
        {s.name: s.ledger.committed for s in stages},
        c.schema_ids,
        dead_letter_errors(cfg, stages, [c.missing])[0],
    )


def merge(cfg: PipelineConfig, partials: list[Partial]) -> Computed:
    """One window from all its shards, as the engine computes it (the gate judges it)."""
    window, shard0 = _check_complete(partials)
    names = [m.stage for m in shard0.stages]
    stages = []
    for i, name in enumerate(names):
        merged = StageMetrics(name)
        for counter in COUNTERS:
            setattr(merged, counter, sum(getattr(p.stages[i], counter) for p in partials))
        if i:  # the origin has no latency
            merged.latency_ms = picked_from_sorted([p.latencies_us[i - 1] for p in partials])
        stages.append(merged)
    events = sum(p.events for p in partials)
    early = [
        (sum(p.early[h][0] for p in partials), min(p.early[h][1] for p in partials))
        for h in range(len(names) - 1)
    ]
    stalled = {n: sum(p.stalled.get(n, 0) for p in partials) for n in names[1:]}
    # stall_notes reads the committed offsets from the stages' reads: the same in every shard.
    held = [
        StageInput(n, LedgerRead("", empty_ledger(), committed=shard0.committed.get(n)))
        for n in names
    ]
    schema_ids = _schema_ids(partials, shard0)
    by_error: dict[str, dict[str, int]] = {}
    for p in partials:
        for stage, errors in p.dead_letter_errors.items():
            mine = by_error.setdefault(stage, {})
            for error, n in errors.items():
                mine[error] = mine.get(error, 0) + n
    # Most first, then by text: the order the unsharded window lists them in.
    by_error = {
        stage: dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])))
        for stage, errors in by_error.items()
    }
    notes = [
        *shard0.read_notes,
        *clock_notes(stages[1:], early, cfg.window.skew),
        *schemas.notes(schema_ids),
        *stall_notes(cfg, stalled, held),
    ]
    return Computed(
        cfg.pipeline,
        window,
        events=events,
        stages=stages,
        end_to_end=end_to_end_of(events, stages),
        missing=_missing(partials, names),
        notes=notes,
        schema_ids=schema_ids,
        dead_letter_errors=by_error,
    )


def _check_complete(partials: list[Partial]) -> tuple[Window, Partial]:
    """The window, and shard 0: every shard of one window, each once, or ValueError."""
    if not partials:
        raise ValueError("no shards to merge")
    window, count = partials[0].window, partials[0].shard.count
    got = sorted(p.shard.index for p in partials)
    if any(p.window != window or p.shard.count != count for p in partials):
        shown = [f"{p.window} {p.shard}" for p in partials]
        raise ValueError(f"shards of different windows or counts: {shown}")
    if got != list(range(count)):
        raise ValueError(f"window {window}: shards {got} of 0..{count - 1} to merge")
    return window, next(p for p in partials if p.shard.index == 0)


def _schema_ids(partials: list[Partial], shard0: Partial) -> list[SchemaIdUse]:
    """Shard 0's schema IDs (every shard sees the same messages), events and loss added."""
    events: dict[tuple[str, int], int] = {}
    lost: dict[tuple[str, int], int] = {}
    for p in partials:
        for u in p.schema_ids:
            key = (u.stage, u.schema_id)
            events[key] = events.get(key, 0) + u.events
            lost[key] = lost.get(key, 0) + u.lost_next
    return [
        dataclasses.replace(
            u,
            events=events[(u.stage, u.schema_id)],
            lost_next=lost[(u.stage, u.schema_id)],
        )
        for u in shard0.schema_ids
    ]


def _missing(partials: list[Partial], names: list[str]) -> pa.Table:
    """The shards' missing events in the unsharded order: by hop, then ID."""
    table = pa.concat_tables([p.missing.cast(MISSING_SCHEMA) for p in partials])
    hop = pc.index_in(table["stage"], value_set=pa.array(names))
    order = pc.sort_indices(
        table.append_column("hop", hop),
        sort_keys=[("hop", "ascending"), ("event_id", "ascending")],
    )
    return table.take(order)


# ---- partials as files -------------------------------------------------------------------


def partial_dir(root: str, pipeline: str, window: Window, shard: Shard) -> Path:
    """Where a shard's partial result is written under `root` (one night's directory)."""
    stamp = window.start.strftime("%Y%m%dT%H%M%SZ")
    return Path(root) / pipeline / stamp / f"shard-{shard.index}-of-{shard.count}"


def save(partial: Partial, where: Path) -> str:
    """Write `partial` to the directory `where`, whole or not at all; returns its path.

    A retried shard task writes it again: the new one replaces the old at once.
    """
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.parent / f".{where.name}.{uuid.uuid4().hex}"
    tmp.mkdir()
    counts = {
        "window": [iso(partial.window.start), iso(partial.window.end)],
        "shard": [partial.shard.index, partial.shard.count],
        "events": partial.events,
        "stages": [
            {"stage": m.stage, **{c: getattr(m, c) for c in COUNTERS}} for m in partial.stages
        ],
        "stalled": partial.stalled,
        "early": [list(e) for e in partial.early],
        "read_notes": partial.read_notes,
        "schema_ids": [
            {k: v for k, v in u.as_dict().items() if k != "lost_rate"} for u in partial.schema_ids
        ],
        "dead_letter_errors": partial.dead_letter_errors,
        "committed": {
            n: None if c is None else {str(p): o for p, o in c.items()}
            for n, c in partial.committed.items()
        },
    }
    (tmp / _COUNTS).write_text(json.dumps(counts))
    pq.write_table(partial.missing, tmp / _MISSING)
    for h, us in enumerate(partial.latencies_us, start=1):
        np.save(tmp / f"latency-{h}.npy", np.ascontiguousarray(us, np.int64))
    if where.exists():
        shutil.rmtree(where)
    os.replace(tmp, where)
    return str(where)


def load(path: str) -> Partial:
    """A partial written by `save`; its latencies memory-mapped, not read."""
    where = Path(path)
    counts = json.loads((where / _COUNTS).read_text())
    stages = [StageMetrics(**s) for s in counts["stages"]]
    return Partial(
        Window(parse_instant(counts["window"][0]), parse_instant(counts["window"][1])),
        Shard(*counts["shard"]),
        counts["events"],
        stages,
        pq.read_table(where / _MISSING).cast(MISSING_SCHEMA),
        [np.load(where / f"latency-{h}.npy", mmap_mode="r") for h in range(1, len(stages))],
        counts["stalled"],
        [(int(n), int(t)) for n, t in counts["early"]],
        counts["read_notes"],
        {
            n: None if c is None else {int(p): int(o) for p, o in c.items()}
            for n, c in counts["committed"].items()
        },
        [_schema_use(u) for u in counts["schema_ids"]],
        counts["dead_letter_errors"],
    )


def _schema_use(saved: dict[str, Any]) -> SchemaIdUse:
    times = {k: parse_instant(saved[k]) if saved[k] else None for k in ("first_time", "last_time")}
    return SchemaIdUse(**{**saved, **times})
