"""A run: split the range into windows, read every ledger, compute, gate, store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, chain, pairwise

from recon.checks.expectations import ensure_suite, validate
from recon.config import PipelineConfig
from recon.engine.carry import Kept, carry_over, joined, remainder, source_ranges
from recon.engine.heap import bound_heap, release_freed_memory
from recon.engine.metrics import DUCKDB_MEMORY_BIG_WINDOW, Ranges, StageInput, compute_many
from recon.engine.phases import Phases
from recon.engine.rules import is_settled, run_exit_code, window_status
from recon.errors import ReconError, SourceError
from recon.model import LedgerRead, Window, WindowResult
from recon.sources import check_reachable, count_ledger_windows, read_ledger
from recon.sources.base import SourceConfig
from recon.store import ResultStore

MAX_NOTES_PER_STAGE = 20
Read = list[StageInput] | SourceError  # every source's ledger, or what stopped the read
# Rows one read of one source may hold; windows are grouped under it (override: env).
MAX_ROWS_PER_READ = int(os.environ.get("RECON_MAX_ROWS_PER_READ", "2000000"))


@dataclass
class RunReport:
    """The outcome of `recon run`: one result per window, and the run's exit code."""

    pipeline: str
    run_id: str
    windows: list[WindowResult] = field(default_factory=list)
    phases: Phases = field(default_factory=Phases)
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 ok/incomplete, 1 breach, 3 error (see rules.run_exit_code)."""
        return run_exit_code([w.status for w in self.windows])

    def as_dict(self) -> dict[str, object]:
        """The `--json` report (DESIGN.md contract)."""
        return {"pipeline": self.pipeline, "windows": [w.as_dict() for w in self.windows]}

    def timings(self) -> dict[str, object]:
        """Wall time and seconds per phase (`recon run --timings`)."""
        return {"wall_s": round(self.wall_s, 3), "phases": self.phases.as_dict()}


def config_digest(cfg: PipelineConfig) -> str:
    """Identifies the configuration a result was computed with (secrets are hashed, not kept)."""
    return hashlib.sha256(
        json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]


def ranges(cfg: PipelineConfig) -> Ranges:
    """The search ranges around each window, from the config."""
    return Ranges(grace=cfg.window.grace, skew=cfg.window.skew)


def read_span(
    cfg: PipelineConfig,
    span: Window,
    phases: Phases | None = None,
    kept: dict[str, Kept] | None = None,
) -> list[StageInput]:
    """Read every stage and dead-letter sink for the windows of `span`, concurrently.

    The origin is read over the span's origin range and the others over its
    downstream range, which cover the search ranges of every window in it.
    Rows `kept` from the previous read (`carry_over`) are not read again.
    """
    jobs = source_ranges(cfg, ranges(cfg), span)
    phases = phases if phases is not None else Phases()
    kept = kept or {}

    def read(job: tuple[SourceConfig, Window]) -> LedgerRead:
        source, want = job
        with phases.timed(f"read {source.name}"):
            head = kept.get(source.name)
            return joined(head, want, read_ledger(source, remainder(head, want)))

    with phases.timed("read (all sources)"), ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        reads = list(pool.map(read, jobs))  # I/O and C code: the GIL is mostly released
    by_name = {c.name: read for (c, _), read in zip(jobs, reads, strict=True)}
    return [
        StageInput(
            s.name,
            by_name[s.name],
            [by_name[d.name] for d in cfg.dead_letters if d.stage == s.name],
        )
        for s in cfg.stages
    ]


def _stall_notes(
    cfg: PipelineConfig, stalled: dict[str, int], stages: list[StageInput]
) -> list[str]:
    """Why events in flight were charged as lost: the group and where it has committed."""
    notes = []
    for i, stage in enumerate(cfg.stages[1:], start=1):
        n = stalled.get(stage.name, 0)
        if not n:
            continue
        before = cfg.stages[i - 1]
        group = getattr(before, "consumer_group", None)
        offsets = stages[i - 1].ledger.committed or {}
        where = ", ".join(f"[{p}]@{o}" for p, o in sorted(offsets.items())) or "none"
        notes.append(
            f"{stage.name}: {n} events in flight past stall ({cfg.window.stall}): still at or "
            f"beyond the committed offsets of consumer group {group!r} on {before.name} "
            f"({where}) a stall after the window's end, so charged as lost (a rewound or "
            "stuck consumer)"
        )
    return notes


def _notes(stages: list[StageInput], window: Window) -> list[str]:
    """Retention gaps, and the unusable rows (no usable ID or time) that count in this window."""
    notes = []
    for stage in stages:
        for read in [stage.ledger, *stage.dead_letters]:
            notes += [f"{stage.name}: {gap}" for gap in read.gaps]
            notes += [f"{stage.name}: {warning}" for warning in read.warnings]
            bad = [b for b in read.bad_records if b.counts_in(window)]
            if not bad:
                continue
            notes.append(
                f"{stage.name}: {sum(b.count for b in bad)} rows without a usable "
                f"event ID or time in {read.source}"
            )
            notes += [f"{stage.name}:   {b.where}: {b.reason}" for b in bad[:MAX_NOTES_PER_STAGE]]
            if len(bad) > MAX_NOTES_PER_STAGE:
                notes.append(f"{stage.name}:   ... and {len(bad) - MAX_NOTES_PER_STAGE} more")
    return notes


def reconcile_windows(
    cfg: PipelineConfig,
    windows: list[Window],
    phases: Phases | None = None,
    now: datetime | None = None,
) -> list[WindowResult]:
    """Compute consecutive windows from one read of every source (without the gate).

    A source that cannot be read gives every window an error result with no numbers.
    """
    phases = phases if phases is not None else Phases()
    return compute_windows(cfg, windows, read_windows(cfg, windows, phases), phases, now)


def read_windows(
    cfg: PipelineConfig,
    windows: list[Window],
    phases: Phases,
    kept: dict[str, Kept] | None = None,
) -> list[StageInput] | SourceError:
    """Every source read once over the ranges of `windows`, or the error that stopped it."""
    try:
        return read_span(cfg, span_of(windows), phases, kept)
    except SourceError as exc:
        return exc
    finally:
        release_freed_memory()


def span_of(windows: list[Window]) -> Window:
    """From the first window's start to the last one's end."""
    return Window(windows[0].start, windows[-1].end)


def carried(
    cfg: PipelineConfig,
    windows: list[Window],
    stages: Read,
    after: list[Window],
) -> dict[str, Kept] | None:
    """What the read of `windows` (`stages`) hands on to the read of the windows `after` it."""
    if isinstance(stages, SourceError) or not after:
        return None
    return carry_over(cfg, ranges(cfg), span_of(windows), stages, span_of(after))


def compute_windows(
    cfg: PipelineConfig,
    windows: list[Window],
    stages: list[StageInput] | SourceError,
    phases: Phases,
    now: datetime | None = None,
) -> list[WindowResult]:
    """The windows' results from their reads (`read_windows`), judged at `now`."""
    if isinstance(stages, SourceError):
        return [WindowResult(cfg.pipeline, w, "error", error=str(stages)) for w in windows]
    r = ranges(cfg)
    release_freed_memory()  # what the reads and the last store freed: DuckDB's turn
    with phases.timed("compute"):
        big = sum(s.ledger.table.num_rows for s in stages) > MAX_ROWS_PER_READ * len(stages)
        memory = DUCKDB_MEMORY_BIG_WINDOW if big else None
        now = now or datetime.now(UTC)
        stalled = [now >= w.end + cfg.window.stall for w in windows]
        computed_windows = compute_many(windows, stages, r, memory, stalled)
    release_freed_memory()  # what DuckDB freed, before the next read allocates
    results = []
    for window, computed in zip(windows, computed_windows, strict=True):
        results.append(
            WindowResult(
                cfg.pipeline,
                window,
                "incomplete",
                events=computed.events,
                stages=computed.stages,
                end_to_end=computed.end_to_end,
                missing=computed.missing,
                notes=[
                    *_notes(stages, window),
                    *computed.notes,
                    *_stall_notes(cfg, computed.stalled, stages),
                ],
            )
        )
    return results


def _reconcile_in_worker(
    cfg: PipelineConfig, windows: list[Window], now: datetime, per_read: int | None = None
) -> tuple[list[WindowResult], Phases]:
    """Reconcile `windows` in a pool worker, `per_read` of them a read (default: all).

    Each read takes over the rows of the one before that it needs. The phases
    travel back with the results.
    """
    bound_heap()  # a forked worker has it already; a spawned one does not
    phases = Phases()
    per_read = per_read or len(windows)
    parts = [windows[i : i + per_read] for i in range(0, len(windows), per_read)]
    results: list[WindowResult] = []
    kept = None
    for j, part in enumerate(parts):
        stages = read_windows(cfg, part, phases, kept)
        results += compute_windows(cfg, part, stages, phases, now)
        kept = carried(cfg, part, stages, parts[j + 1] if j + 1 < len(parts) else [])
        del stages  # before the next read
    return results, phases


def _worker_tasks(
    windows: list[Window], rows: list[int], jobs: int
) -> list[tuple[list[Window], int]]:
    """(windows, windows per read) for each task of the pool: the chunks (`chunk`).

    Consecutive windows over one read's budget go two by two, read one after the
    other: the second reads only what the first has not (two reads of 1.5
    windows' rows would be 3; these are 2.5 with a 30-minute grace), and a
    worker holds one window's results while it computes the other.
    """
    size = dict(zip(windows, rows, strict=True))
    tasks: list[tuple[list[Window], int]] = []
    for part in chunk(windows, rows, jobs):
        big = size[part[0]] > MAX_ROWS_PER_READ  # such a window is a chunk of its own
        if big and tasks and tasks[-1][1] == 1 and len(tasks[-1][0]) == 1:
            previous = tasks[-1][0][0]
            if size[previous] > MAX_ROWS_PER_READ:
                tasks[-1] = ([previous, part[0]], 1)
                continue
        tasks.append((part, 1 if big else len(part)))
    return tasks


def chunk(
    windows: list[Window], rows: list[int], jobs: int, max_rows: int | None = None
) -> list[list[Window]]:
    """Group consecutive windows so that one read of a source stays under `max_rows` rows.

    `rows` holds each window's estimated rows (`window_rows`). Windows are the
    unit of memory: a chunk never has fewer than one. With several jobs, there
    are at least as many chunks as jobs when possible.
    """
    budget = max_rows or MAX_ROWS_PER_READ
    most = -(-len(windows) // max(jobs, 1))
    chunks: list[list[Window]] = []
    current: list[Window] = []
    total = 0
    for window, n in zip(windows, rows, strict=True):
        if current and (total + n > budget or len(current) >= most):
            chunks.append(current)
            current, total = [], 0
        current.append(window)
        total += n
    if current:
        chunks.append(current)
    return chunks


def count_origin(cfg: PipelineConfig, windows: list[Window]) -> list[int] | None:
    """Each window's origin rows, counted without reading them (offsets, footers, count(*)).

    None where counting means reading (file logs), or when the origin cannot be
    counted: the reads then fail and say why, one window at a time.
    """
    if cfg.origin.source == "files":
        return None
    try:
        return count_ledger_windows(cfg.origin, windows)
    except ReconError:
        return None


def window_rows(
    cfg: PipelineConfig, first: list[WindowResult], counts: list[int] | None, rest: int
) -> list[int]:
    """The estimated rows of each window's largest ledger after the first, to size reads.

    `counts` are the origin rows of the first window and the `rest` after it
    (`count_origin`). The first window (`first`, computed) gives its largest ledger's rows
    per origin row, which scales the others' counts. A day's hours differ (a
    quiet night, a busy noon): sized by the first hour alone, a quiet midnight
    put the busy hours of a day in one read, far over its budget.
    """
    largest = _largest_read(first, len(cfg.stages))
    if counts is None:
        # Unknown: the first window's size, or one window a read if it failed.
        return [largest if first[0].error is None else MAX_ROWS_PER_READ] * rest
    per_origin_row = max(1.0, largest / counts[0]) if counts[0] else 1.0
    return [math.ceil(n * per_origin_row) for n in counts[1:]]


def _largest_read(results: list[WindowResult], stages: int) -> int:
    """Rows of the largest ledger of a computed window (an estimate for chunking)."""
    return max(
        (m.upstream + m.duplicates + m.orphans for r in results for m in r.stages[:stages]),
        default=0,
    )


def verdict_notes(result: WindowResult) -> list[str]:
    """What broke a limit besides loss (the table shows loss): volume and unreadable rows."""
    notes = []
    unreadable = {m.stage: m.unreadable for m in result.stages}
    for e in result.expectations:
        if e.success or e.observed is None:
            continue
        if e.column == "events":
            notes.append(
                f"{e.stage}: volume dropped to {e.observed:.0f} events "
                f"(min_events {e.threshold:.0f} for this window)"
            )
        elif e.column == "unreadable_rate":
            notes.append(
                f"{e.stage}: {unreadable.get(e.stage, 0)} rows without a usable event ID or "
                f"time, {e.observed:.4%} of the rows seen, above max_unreadable_rate "
                f"{e.threshold:g}: the window cannot be judged ok"
            )
    return notes


def _settle_status(cfg: PipelineConfig, result: WindowResult, now: datetime) -> None:
    if result.error is not None or result.end_to_end is None:
        result.status = "error"
        return
    e2e = result.end_to_end
    result.status = window_status(
        error=False,
        breach=any(m.breach for m in [*result.stages, e2e]),
        pending=e2e.pending,
        unverifiable=e2e.unverifiable,
        settled=is_settled(result.window.end, cfg.window.settle, now),
    )


def run(
    cfg: PipelineConfig,
    start: datetime,
    end: datetime,
    store: ResultStore | None,
    jobs: int = 1,
    now: datetime | None = None,
    keep_missing: bool = True,
    progress: Callable[[WindowResult], None] | None = None,
) -> RunReport:
    """Reconcile every window of [start, end), gate it, store it; returns the report.

    Windows are gated and stored as their chunk completes; with `keep_missing`
    false the missing IDs are then dropped from memory (they are in the store).
    `progress` is called with each window once it is stored.
    """
    started = time.perf_counter()
    bound_heap()  # before any thread allocates
    phases = Phases()
    windows = cfg.window.cut(start, end)
    suite = ensure_suite(cfg)  # configuration problems surface before any reading
    run_id = str(uuid.uuid4())
    if store is not None:
        store.upgrade()  # an unreachable store fails the run before any work
        run_id = store.start_run(cfg.pipeline, start, end, config_digest(cfg))
    try:
        thresholds = {s.name: cfg.thresholds_for(s.name) for s in cfg.stages[1:]}
        thresholds["end_to_end"] = cfg.thresholds
        now = now or datetime.now(UTC)
        results: list[WindowResult] = []

        stopped: list[BaseException] = []  # the store failed: nothing after it is stored

        def finish(part: list[WindowResult]) -> None:
            if stopped:  # chunks queued behind a failed one (the gate thread's queue)
                raise stopped[0]
            with phases.timed("expectations"):
                validate(suite, part, cfg)
            for result in part:
                result.run_id = run_id
                result.notes += verdict_notes(result)
                _settle_status(cfg, result, now)
                if store is not None:
                    try:
                        with phases.timed("store"):
                            result.window_id = store.save_window(result, thresholds)
                    except BaseException as exc:
                        stopped.append(exc)
                        raise
                    if not keep_missing:
                        result.missing = None
                if progress is not None:
                    progress(result)
            results.extend(part)

        try:
            check_reachable([*cfg.stages, *cfg.dead_letters])
        except SourceError as exc:  # every window is an error, stored as such: no numbers
            finish([WindowResult(cfg.pipeline, w, "error", error=str(exc)) for w in windows])
            windows = []
        # The first window alone tells how big a window's reads are; the rest go in chunks
        # read once per source (no re-reading of the grace/skew overlap between windows).
        if jobs > 1 and len(windows) > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                # While this process sizes the chunks on the first window, jobs - 1 workers
                # already reconcile the next windows, each alone (a window is always a valid
                # chunk): `jobs` windows at a time from the start. (With `jobs` ahead, a
                # 120 M-event day ran three big windows on two cores at first: 600 s
                # instead of 577.) Submitting first also forks the workers before this
                # process has read anything.
                ahead = [pool.submit(_reconcile_in_worker, cfg, [w], now) for w in windows[1:jobs]]
                with ThreadPoolExecutor(1) as counter:
                    counted = counter.submit(count_origin, cfg, [windows[0], *windows[jobs:]])
                    first = reconcile_windows(cfg, windows[:1], phases, now)
                    rows = window_rows(cfg, first, counted.result(), len(windows) - jobs)
                tasks = _worker_tasks(windows[jobs:], rows, jobs)
                rest = pool.map(
                    _reconcile_in_worker,
                    [cfg] * len(tasks),
                    *zip(*((part, now, per_read) for part, per_read in tasks), strict=True),
                )
                finish(first)  # the gate's first use (importing GX) overlaps the workers' reads
                for worker_results, worker_phases in chain((f.result() for f in ahead), rest):
                    phases.merge(worker_phases)
                    finish(worker_results)
        elif windows:
            with ThreadPoolExecutor(1) as counter:  # counted while the first window is read
                counted = counter.submit(count_origin, cfg, windows)
                first_read = read_windows(cfg, windows[:1], phases)
                first = compute_windows(cfg, windows[:1], first_read, phases, now)
                rows = window_rows(cfg, first, counted.result(), len(windows) - 1)
            spans = [windows[:1], *chunk(windows[1:], rows, jobs)]
            # One process: the next chunk is read while this one is computed, gated and
            # stored (reads wait on servers and librdkafka; DuckDB releases the GIL). A
            # window over one read's budget is read after the previous chunk is done, and
            # the next one after it: two of them would not fit in memory together (DuckDB
            # spills what it must). A day with one busy hour overlaps its other chunks.
            # Each read takes over the rows its ranges share with the previous read
            # and reads only the rest from the sources (carry.py).
            sizes = [_largest_read(first, len(cfg.stages)), *rows]
            bounds = pairwise([0, *accumulate(len(span) for span in spans)])
            small = [max(sizes[a:b]) <= MAX_ROWS_PER_READ for a, b in bounds]

            def overlap(j: int) -> bool:
                """Whether span j is read while span j - 1 is computed."""
                return 0 < j < len(spans) and small[j - 1] and small[j]

            def read_after(j: int, previous: list[Read]) -> Read:
                kept = carried(cfg, spans[j - 1], previous.pop(), spans[j])
                return read_windows(cfg, spans[j], phases, kept)

            def prefetch_read(j: int, previous: Read) -> Future[Read] | None:
                if not overlap(j):
                    return None
                return prefetch.submit(read_after, j, [previous])  # popped once carried over

            # The gate and the store run in their own thread, in window order, so the
            # next chunk's compute does not wait for them.
            with ThreadPoolExecutor(1) as prefetch, ThreadPoolExecutor(1) as gate:
                read = prefetch_read(1, first_read)
                handed = None
                if len(spans) > 1 and not overlap(1):
                    handed = carried(cfg, spans[0], first_read, spans[1])
                del first_read
                finished = [gate.submit(finish, first)]
                for j, part in enumerate(spans[1:], start=1):
                    if not overlap(j):
                        # A big window is read once the previous one is stored: a breached
                        # window's missing IDs and their COPY beside the next read made
                        # the peak of a 120 M-event day, 2,139 MiB (1,932 MiB this way;
                        # 1,788 MiB with `bound_heap`), at a wall time within the machine's
                        # drift (bench/RESULTS.md).
                        finished[-1].result()
                    stages = read.result() if read else read_windows(cfg, part, phases, handed)
                    handed = None
                    read = prefetch_read(j + 1, stages)  # at most two chunks in memory
                    computed = compute_windows(cfg, part, stages, phases, now)
                    if j + 1 < len(spans) and not overlap(j + 1):
                        handed = carried(cfg, part, stages, spans[j + 1])
                    del stages  # this chunk's ledgers go before the next read is awaited
                    finished.append(gate.submit(finish, computed))
                    del computed
                    if finished[-2].done():
                        finished[-2].result()  # a store that failed stops the run now
                for done in finished:
                    done.result()
    except BaseException:
        # A run that dies (a store failure, an interrupt) is marked failed, not left
        # "running" forever; the error itself goes on up.
        if store is not None:
            store.mark_failed(run_id)
        raise
    report = RunReport(cfg.pipeline, run_id, results, phases)
    if store is not None:
        store.finish_run(run_id, {0: "ok", 1: "breach", 3: "error"}[report.exit_code])
    report.wall_s = time.perf_counter() - started
    return report
