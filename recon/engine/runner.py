"""A run: split the range into windows, read every ledger, compute, gate, store."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from recon.checks.expectations import Gate, ensure_suite
from recon.config import PipelineConfig
from recon.engine import plan, schedule, schemas
from recon.engine.notes import verdict_notes
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.engine.reading import count_origin
from recon.engine.reconcile import Engine
from recon.engine.status import RUN_STATUS, is_settled, run_exit_code, window_status
from recon.errors import SourceError
from recon.model import END_TO_END, Computed, ExpectationOutcome, Window, WindowResult
from recon.sources import check_reachable
from recon.store import ResultStore


@dataclass
class RunReport:
    """The outcome of `recon run`: one result per window, and the run's exit code."""

    pipeline: str
    run_id: str
    windows: list[WindowResult] = field(default_factory=list)
    phases: Phases = field(default_factory=Phases)
    wall_s: float = 0.0
    data_docs: Path | None = None  # the index of the run's Great Expectations Data Docs

    @property
    def exit_code(self) -> int:
        """0 ok/incomplete, 1 breach, 3 error (see status.run_exit_code)."""
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

    Windows are gated and stored as their span completes; with `keep_missing`
    false the missing IDs are then dropped from memory (they are in the store).
    `progress` is called with each window once it is stored.
    """
    windows = cfg.window.cut(start, end)
    engine = Engine(cfg, now or datetime.now(UTC))

    def reconcile(finish: _Finish, phases: Phases) -> None:
        nonlocal windows
        try:
            check_reachable([*cfg.stages, *cfg.dead_letters])
        except SourceError as exc:  # every window is an error, stored as such: no numbers
            finish([Computed(cfg.pipeline, w, error=str(exc)) for w in windows])
            windows = []
        if jobs > 1 and len(windows) > 1:
            # While this process sizes the spans on the first window, jobs - 1 workers
            # already reconcile the next windows, each alone (a window is always a valid
            # span): `jobs` windows at a time from the start. (With `jobs` ahead, a
            # 120 M-event day ran three big windows on two cores at first: 600 s
            # instead of 577.)
            ahead = [Span([w], cfg.resources.max_rows_per_read) for w in windows[1:jobs]]
            plan_pool = functools.partial(_first_of_pool, engine, windows, jobs, phases)
            schedule.in_pool(engine, ahead, plan_pool, finish, phases, jobs)
        elif windows:
            plan_process = functools.partial(_first_of_process, engine, windows, phases)
            schedule.in_process(engine, plan_process, finish, phases)

    return _stored_run(engine, start, end, store, keep_missing, progress, reconcile)


def finish_computed(
    cfg: PipelineConfig,
    start: datetime,
    end: datetime,
    computed: list[Computed],
    store: ResultStore | None,
    now: datetime,
    keep_missing: bool = True,
) -> RunReport:
    """Gate, judge and store windows computed outside `run`, as one run over [start, end).

    A window merged from its shards (engine/shards.py) is judged and stored as `run`
    stores the windows it computes.
    """

    def judge(finish: _Finish, phases: Phases) -> None:
        finish(computed)

    return _stored_run(Engine(cfg, now), start, end, store, keep_missing, None, judge)


def _stored_run(
    engine: Engine,
    start: datetime,
    end: datetime,
    store: ResultStore | None,
    keep_missing: bool,
    progress: Callable[[WindowResult], None] | None,
    work: Callable[[_Finish, Phases], None],
) -> RunReport:
    """One run's life around `work` (which hands computed windows to the finish step).

    The suite is checked first (configuration problems surface before any
    reading), then the run is recorded; a run that dies (a store failure, an
    interrupt) is marked failed, not left "running" forever, and its error goes
    on up; else it ends with its status and its Data Docs.
    """
    cfg = engine.cfg
    started = time.perf_counter()
    phases = Phases()
    suite = ensure_suite(cfg)
    run_id = str(uuid.uuid4())
    if store is not None:
        store.upgrade()  # an unreachable store fails the run before any work
        run_id = store.start_run(cfg.pipeline, start, end, config_digest(cfg))
    gate = Gate(cfg, suite, run_id)
    finish = _Finish(engine, gate, store, run_id, phases, keep_missing, progress)
    try:
        work(finish, phases)
        with phases.timed("data docs"):
            docs = gate.build_docs(Path(cfg.data_docs) / run_id if cfg.data_docs else None)
    except BaseException:
        if store is not None:
            store.mark_failed(run_id)
        raise
    report = RunReport(cfg.pipeline, run_id, finish.results, phases, data_docs=docs)
    if store is not None:
        store.finish_run(run_id, RUN_STATUS[report.exit_code], docs)
    report.wall_s = time.perf_counter() - started
    return report


def _first_of_process(
    engine: Engine, windows: list[Window], phases: Phases
) -> tuple[list[Computed], list[Span], schedule.Handed]:
    """The first window computed alone; its size plans the spans of the rest.

    Returns its results, every span of the run (the first one's rows known),
    and what the first read hands on to the second span.
    """
    with ThreadPoolExecutor(1) as counter:  # counted while the first window is read
        counted = counter.submit(count_origin, engine.cfg, windows)
        budget = engine.cfg.resources.max_rows_per_read
        head = Span(windows[:1], budget)
        stages = engine.read(head, phases)
        first = engine.compute(head, stages, phases)
        largest = plan.largest_read(first)
        rows = plan.window_rows(largest, counted.result(), len(windows) - 1, budget)
    spans = [Span(head.windows, budget, largest or 0), *plan.spans(windows[1:], rows, 1, budget)]
    handed = engine.carry(spans[0], stages, spans[1]) if len(spans) > 1 else None
    return first, spans, handed


def _first_of_pool(
    engine: Engine, windows: list[Window], jobs: int, phases: Phases
) -> tuple[list[Computed], list[list[Span]]]:
    """The first window computed alone, and the pool's tasks for the windows after `jobs`."""
    with ThreadPoolExecutor(1) as counter:  # counted while the first window is read
        counted = counter.submit(count_origin, engine.cfg, [windows[0], *windows[jobs:]])
        budget = engine.cfg.resources.max_rows_per_read
        first = engine.reconcile([Span(windows[:1], budget)], phases)
        rows = plan.window_rows(
            plan.largest_read(first), counted.result(), len(windows) - jobs, budget
        )
    return first, plan.pool_tasks(windows[jobs:], rows, jobs, budget)


class _Finish:
    """Gates, judges and stores computed windows, in window order, keeping their results.

    Each window's result is made once, with its final status. Once the store has
    failed, nothing after it is stored (spans queued behind the failed one in the
    gate thread raise the same error).
    """

    def __init__(
        self,
        engine: Engine,
        gate: Gate,
        store: ResultStore | None,
        run_id: str,
        phases: Phases,
        keep_missing: bool,
        progress: Callable[[WindowResult], None] | None,
    ) -> None:
        self.cfg, self.now = engine.cfg, engine.now
        self.gate, self.store, self.run_id, self.phases = gate, store, run_id, phases
        self.keep_missing, self.progress = keep_missing, progress
        hops = [*(s.name for s in self.cfg.stages[1:]), END_TO_END]
        self.thresholds = {name: self.cfg.thresholds_for(name) for name in hops}
        self.results: list[WindowResult] = []
        self.failed: BaseException | None = None
        # Schema IDs of the windows before the next one (loaded with the first).
        self.known_schemas: schemas.Known | None = None

    def __call__(self, computed: list[Computed]) -> None:
        if self.failed is not None:
            raise self.failed
        with self.phases.timed("expectations"):
            outcomes = self.gate(computed)
        for c in computed:
            result = self._judged(c, outcomes[c.window])
            if self.store is not None:
                try:
                    with self.phases.timed("store"):
                        result.window_id = self.store.save_window(result, self.thresholds)
                except BaseException as exc:
                    self.failed = exc
                    raise
                if not self.keep_missing:
                    result.missing = None
            if self.progress is not None:
                self.progress(result)
            self.results.append(result)

    def _schema_notes(self, c: Computed) -> list[str]:
        """Which schema IDs are new in the window, and the loss that comes with them.

        Windows are finished in order, so what the store holds before the run's
        first window and the run's own windows since are all the windows before it.
        """
        if self.known_schemas is None:
            self.known_schemas = (
                self.store.schema_ids_before(self.cfg.pipeline, c.window.start)
                if self.store is not None
                else {}
            )
        schemas.mark_first_seen(c.schema_ids, self.known_schemas)
        schemas.remember(c.schema_ids, self.known_schemas)
        said = [(u, schemas.attribution(u)) for u in c.schema_ids]
        return [f"{u.next_stage}: {text}" for u, text in said if text is not None]

    def _judged(self, c: Computed, outcomes: list[ExpectationOutcome]) -> WindowResult:
        """The window's result: the gate's outcomes, its stages' breach flags, its status."""
        breached = {o.stage for o in outcomes if not o.success}
        stages = [replace(m, breach=m.stage in breached) for m in c.stages]
        e2e = c.end_to_end
        if e2e is not None:
            e2e = replace(e2e, breach=e2e.stage in breached)
        status = window_status(
            error=c.error is not None or e2e is None,
            breach=bool(breached),
            pending=e2e.pending if e2e is not None else 0,
            unverifiable=e2e.unverifiable if e2e is not None else 0,
            settled=is_settled(c.window.end, self.cfg.window.settle, self.now),
        )
        return WindowResult(
            c.pipeline,
            c.window,
            status,
            events=c.events,
            stages=stages,
            end_to_end=e2e,
            missing=c.missing,
            notes=[
                *c.notes,
                *verdict_notes(outcomes, stages, c.dead_letter_errors),
                *self._schema_notes(c),
            ],
            expectations=outcomes,
            error=c.error,
            run_id=self.run_id,
            dead_letter_errors=c.dead_letter_errors,
            schema_ids=c.schema_ids,
        )
