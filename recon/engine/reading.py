"""Reading a span: every stage's ledger and dead-letter sinks, once, concurrently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from recon.config import PipelineConfig
from recon.engine.carry import Kept, carry_over, joined, remainder, source_ranges
from recon.engine.heap import release_freed_memory
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.errors import ReconError, SourceError
from recon.model import LedgerRead, Ranges, Shard, StageInput, Window
from recon.sources import count_ledger_windows, countable, read_ledger
from recon.sources.base import SourceConfig

Read = list[StageInput] | SourceError  # every source's ledger, or what stopped the read


def ranges(cfg: PipelineConfig) -> Ranges:
    """The search ranges around each window, from the config."""
    return Ranges(grace=cfg.window.grace, skew=cfg.window.skew)


def read_range(
    cfg: PipelineConfig,
    span: Window,
    phases: Phases | None = None,
    kept: dict[str, Kept] | None = None,
    shard: Shard | None = None,
) -> list[StageInput]:
    """Read every stage and dead-letter sink for the windows in `span`, concurrently.

    The origin is read over the span's origin range and the others over its
    downstream range, which cover the search ranges of every window in it.
    Rows `kept` from the previous read (`carried`) are not read again. With a
    `shard`, only its rows are kept, and the sources are read one at a time: a
    source that cannot push the shard's predicate down is read whole before it is
    filtered, and one such read at a time bounds a shard's memory.
    """
    jobs = source_ranges(cfg, ranges(cfg), span)
    phases = phases if phases is not None else Phases()
    kept = kept or {}

    def read(job: tuple[SourceConfig, Window]) -> LedgerRead:
        source, want = job
        with phases.timed(f"read {source.name}"):
            head = kept.get(source.name)
            return joined(head, want, read_ledger(source, remainder(head, want), shard))

    threads = 1 if shard is not None and shard.count > 1 else len(jobs)
    with phases.timed("read (all sources)"), ThreadPoolExecutor(max_workers=threads) as pool:
        reads = list(pool.map(read, jobs))  # I/O and C code: the GIL is mostly released
    by_name = {c.name: read for (c, _), read in zip(jobs, reads, strict=True)}
    return [
        StageInput(
            s.name,
            by_name[s.name],
            [by_name[d.name] for d in cfg.dead_letters_of(s.name)],
        )
        for s in cfg.stages
    ]


def read(
    cfg: PipelineConfig, span: Span, phases: Phases, kept: dict[str, Kept] | None = None
) -> Read:
    """Every source read once over the ranges of the span, or the error that stopped it."""
    try:
        return read_range(cfg, span.range, phases, kept)
    except SourceError as exc:
        return exc
    finally:
        release_freed_memory()


def carried(
    cfg: PipelineConfig, span: Span, stages: Read, after: Span, now: datetime
) -> dict[str, Kept] | None:
    """What the read of `span` (`stages`) hands on to the read of the span `after` it."""
    if isinstance(stages, SourceError):
        return None
    return carry_over(cfg, ranges(cfg), span.range, stages, after.range, now)


def count_origin(cfg: PipelineConfig, windows: list[Window]) -> list[int] | None:
    """Each window's origin rows, counted without reading them (offsets, footers, count(*)).

    None where counting means reading (file logs), or when the origin cannot be
    counted: the reads then fail and say why, one window at a time.
    """
    if not countable(cfg.origin):
        return None
    try:
        return count_ledger_windows(cfg.origin, windows)
    except ReconError:
        return None
