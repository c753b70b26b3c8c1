"""The engine's steps for one run: read a span, compute its windows, hand rows on.

Carried reads equal fresh ones: a span's read takes over the rows its ranges
share with the span before it (carry.py) only where a row is in [a, b) and
[b, c) exactly when it is in [a, c), so each window is computed from the same
rows whichever span it is in. `Engine` enforces it by being the only caller of
`reading.carried`, always with the span the rows were read for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from recon.config import PipelineConfig
from recon.engine.carry import Kept
from recon.engine.dead_letters import dead_letter_errors
from recon.engine.heap import bound_memory, release_freed_memory
from recon.engine.loss import compute_many
from recon.engine.notes import read_notes, stall_notes
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.engine.reading import Read, carried, ranges, read
from recon.errors import SourceError
from recon.model import Computed, Window


@dataclass(frozen=True)
class Engine:
    """Reading and computing for one config, judged at `now` (picklable: pool workers get it)."""

    cfg: PipelineConfig
    now: datetime

    def read(self, span: Span, phases: Phases, kept: dict[str, Kept] | None = None) -> Read:
        """The span's ledgers, reading only what `kept` (from the span before) lacks."""
        if span.big:
            bound_memory()
        return read(self.cfg, span, phases, kept)

    def carry(self, span: Span, stages: Read, after: Span) -> dict[str, Kept] | None:
        """The rows of the read of `span` that the read of `after` (the next span) needs."""
        return carried(self.cfg, span, stages, after, self.now)

    def compute(self, span: Span, stages: Read, phases: Phases) -> list[Computed]:
        """The span's windows from its read; every window an error if a source failed.

        They have no status yet: the gate and the rules judge them (runner._Finish).
        """
        cfg = self.cfg
        if isinstance(stages, SourceError):
            return [Computed(cfg.pipeline, w, error=str(stages)) for w in span.windows]
        res = cfg.resources
        rows = sum(s.ledger.table.num_rows for s in stages)
        big = rows > res.max_rows_per_read * len(stages)
        if big:  # a window no estimate sized (the first one) may turn out big here
            bound_memory()
        release_freed_memory()  # what the reads and the last store freed: DuckDB's turn
        with phases.timed("compute"):
            memory = res.duckdb_memory_big_window if big else res.duckdb_memory
            stalled = [self.now >= w.end + cfg.window.stall for w in span.windows]
            computed = compute_many(span.windows, stages, ranges(cfg), memory, stalled)
        release_freed_memory()  # what DuckDB freed, before the next read allocates
        try:  # the error headers are read now, for the dead-lettered events only
            with phases.timed("read dead-letter errors"):
                errors = dead_letter_errors(cfg, stages, [c.missing for c in computed])
        except SourceError as exc:  # a sink gone since it was read: no numbers, as for a read
            return [Computed(cfg.pipeline, w, error=str(exc)) for w in span.windows]
        return [
            Computed(
                cfg.pipeline,
                window,
                events=c.events,
                stages=c.stages,
                end_to_end=c.end_to_end,
                missing=c.missing,
                schema_ids=c.schema_ids,
                notes=[
                    *read_notes(stages, window),
                    *c.notes,
                    *stall_notes(cfg, c.stalled, stages),
                ],
                dead_letter_errors=by_error,
            )
            for window, c, by_error in zip(span.windows, computed, errors, strict=True)
        ]

    def reconcile(self, spans: list[Span], phases: Phases) -> list[Computed]:
        """The spans one after the other, each taking over the rows of the one before."""
        results: list[Computed] = []
        kept = None
        for j, span in enumerate(spans):
            after = spans[j + 1] if j + 1 < len(spans) else None
            computed, kept = self._step(span, kept, after, phases)
            results += computed
        return results

    def _step(
        self, span: Span, kept: dict[str, Kept] | None, after: Span | None, phases: Phases
    ) -> tuple[list[Computed], dict[str, Kept] | None]:
        # Its own frame: the span's ledgers are freed when it returns, before the next read.
        stages = self.read(span, phases, kept)
        computed = self.compute(span, stages, phases)
        return computed, self.carry(span, stages, after) if after is not None else None


def reconcile_windows(
    cfg: PipelineConfig,
    windows: list[Window],
    phases: Phases | None = None,
    now: datetime | None = None,
) -> list[Computed]:
    """Consecutive windows from one read of every source, without the gate (no status).

    A source that cannot be read gives every window an error result with no numbers.
    """
    engine = Engine(cfg, now or datetime.now(UTC))
    span = Span(windows, cfg.resources.max_rows_per_read)
    return engine.reconcile([span], phases if phases is not None else Phases())
