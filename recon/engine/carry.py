"""Rows one read hands on to the next: consecutive reads share their grace and skew ranges.

Window k's origin range ends `skew` after its end, and window k+1's starts
`grace` before its start: with a 30-minute grace, each read of one hourly
window re-read half an hour its predecessor had just read (a 120 M-event day
read 1.52 rows per row). The rows of that overlap are kept from the previous
read, and only the part of the range after it is read from the source.

Readers whose ranges are exact (a row is in [a, b) and [b, c) exactly when it
is in [a, c); `Kind.exact_ranges`) take part: SQL, Kafka and parquet. A Kafka read goes on past its
range's end (`read_past_end`, for records stored out of timestamp order): the
rest is read from where it stopped, so the two reads are exact by offsets.
File logs are read whole, so their rows without a time would count twice;
they are always read in full, and so is a Kafka ledger with a retention gap
(whether a read reports one depends on the offset it starts at), and a range
younger than the settle time (rows may still arrive in it). Without a gap in
the previous read, neither the rest nor a whole read can start at the low
watermark, so neither reports one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from recon.config import PipelineConfig
from recon.model import LedgerRead, Ranges, StageInput, Window
from recon.sources import kind_of
from recon.sources.base import SourceConfig

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Kept:
    """A source's rows of `covered` (a range's head the next read need not read again).

    The rest of the range is read from `rest_from` on: `covered`'s end, or past it
    as far as the read that kept the rows went (`read_past_end`).
    """

    covered: Window
    rest_from: datetime
    ledger: LedgerRead


def source_ranges(
    cfg: PipelineConfig, ranges: Ranges, span: Window
) -> list[tuple[SourceConfig, Window]]:
    """What a read of `span` reads: the origin over its origin range, the rest downstream."""
    jobs: list[tuple[SourceConfig, Window]] = [(cfg.origin, ranges.origin(span))]
    jobs += [(s, ranges.downstream(span)) for s in cfg.stages[1:]]
    jobs += [(d, ranges.downstream(span)) for d in cfg.dead_letters]
    return jobs


def carry_over(
    cfg: PipelineConfig,
    ranges: Ranges,
    span: Window,
    stages: list[StageInput],
    after: Window,
    now: datetime,
) -> dict[str, Kept]:
    """The rows of `stages` (a read of `span`) that the read of `after` needs too, at `now`."""
    ledgers = {s.name: stage.ledger for s, stage in zip(cfg.stages, stages, strict=True)}
    for stage in stages:
        sinks = cfg.dead_letters_of(stage.name)
        ledgers |= {d.name: read for d, read in zip(sinks, stage.dead_letters, strict=True)}
    wanted = {source.name: want for source, want in source_ranges(cfg, ranges, after)}
    # Rows may still arrive for a range younger than the settle time (a Kafka range that
    # ended at the high watermark, a late commit): kept rows would miss them, and the
    # next read, starting where this one ended, too. Such ranges are read again.
    settled = now - cfg.window.settle
    kept = {}
    for source, covered in source_ranges(cfg, ranges, span):
        want = wanted[source.name]
        ledger = ledgers[source.name]
        rest_from = covered.end + source.read_past_end()
        # A retention gap depends on where a read starts: such a ledger is read again.
        exact = kind_of(source).exact_ranges and not ledger.gaps and rest_from <= settled
        if exact and covered.start <= want.start < covered.end and rest_from < want.end:
            head = Window(want.start, covered.end)
            kept[source.name] = Kept(head, rest_from, _since(ledger, want.start))
    return kept


def _since(ledger: LedgerRead, start: datetime) -> LedgerRead:
    """The ledger's rows (and unusable rows) at or after `start`."""
    table = ledger.table.filter(pc.greater_equal(ledger.table["stage_time"], pa.scalar(start, _TS)))
    bad = [b for b in ledger.bad_records if b.time is not None and b.time >= start]
    schema_ids = ledger.schema_ids.since(start) if ledger.schema_ids is not None else None
    return LedgerRead(
        ledger.source, table, bad, ledger.gaps, ledger.committed, ledger.warnings, schema_ids
    )


def remainder(kept: Kept | None, want: Window) -> Window:
    """The part of `want` still to read from the source."""
    if kept is None or kept.covered.start != want.start:
        return want
    return Window(kept.rest_from, want.end)


def joined(kept: Kept | None, want: Window, read: LedgerRead) -> LedgerRead:
    """`read` (of `remainder(kept, want)`) with the kept rows before it: the read of `want`.

    Gaps are the new read's (a kept ledger has none); warnings of both stand once;
    the newer read's committed offsets are the ones compared with.
    """
    if kept is None or kept.covered.start != want.start:
        return read
    old = kept.ledger
    return LedgerRead(
        read.source,
        pa.concat_tables([old.table, read.table]),
        old.bad_records + read.bad_records,
        read.gaps,
        read.committed,
        list(dict.fromkeys(old.warnings + read.warnings)),
        old.schema_ids.then(read.schema_ids) if old.schema_ids is not None else read.schema_ids,
    )
