"""A run: split the range into windows, read every ledger, compute, gate, store."""

from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from recon.checks.expectations import ensure_suite, validate
from recon.config import PipelineConfig
from recon.engine.metrics import StageInput, compute
from recon.engine.rules import is_settled, run_exit_code, window_status
from recon.errors import SourceError
from recon.model import LedgerRead, Window, WindowResult
from recon.sources import read_ledger
from recon.sources.base import SourceConfig
from recon.store import ResultStore

MAX_NOTES_PER_STAGE = 20


@dataclass
class RunReport:
    """The outcome of `recon run`: one result per window, and the run's exit code."""

    pipeline: str
    run_id: str
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 ok/incomplete, 1 breach, 3 error (see rules.run_exit_code)."""
        return run_exit_code([w.status for w in self.windows])

    def as_dict(self) -> dict[str, object]:
        """The `--json` report (DESIGN.md contract)."""
        return {"pipeline": self.pipeline, "windows": [w.as_dict() for w in self.windows]}


def config_digest(cfg: PipelineConfig) -> str:
    """Identifies the configuration a result was computed with (secrets are hashed, not kept)."""
    return hashlib.sha256(
        json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]


def _read(cfg: SourceConfig, window: Window) -> LedgerRead:
    return read_ledger(cfg, window)


def read_window(cfg: PipelineConfig, window: Window) -> list[StageInput]:
    """Read every stage and dead-letter sink for `window`, concurrently (I/O bound)."""
    w = cfg.window
    origin_range = window.widen(w.grace, w.skew)  # origin rows of events seen downstream
    downstream_range = window.widen(w.skew, w.grace)  # late and skewed arrivals
    jobs: list[tuple[SourceConfig, Window]] = [(cfg.origin, origin_range)]
    jobs += [(s, downstream_range) for s in cfg.stages[1:]]
    jobs += [(d, downstream_range) for d in cfg.dead_letters]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        reads = list(pool.map(lambda job: _read(*job), jobs))
    by_name = {c.name: r for (c, _), r in zip(jobs, reads, strict=True)}
    return [
        StageInput(
            s.name,
            by_name[s.name],
            [by_name[d.name] for d in cfg.dead_letters if d.stage == s.name],
        )
        for s in cfg.stages
    ]


def _notes(stages: list[StageInput]) -> list[str]:
    notes = []
    for stage in stages:
        for read in [stage.ledger, *stage.dead_letters]:
            for gap in read.gaps:
                notes.append(f"{stage.name}: {gap}")
            if read.bad_records:
                notes.append(
                    f"{stage.name}: {read.unreadable} rows without a usable event ID "
                    f"in {read.source}"
                )
                for bad in read.bad_records[:MAX_NOTES_PER_STAGE]:
                    notes.append(f"{stage.name}:   {bad.where}: {bad.reason}")
                if len(read.bad_records) > MAX_NOTES_PER_STAGE:
                    notes.append(
                        f"{stage.name}:   ... and "
                        f"{len(read.bad_records) - MAX_NOTES_PER_STAGE} more"
                    )
    return notes


def reconcile_window(cfg: PipelineConfig, window: Window) -> WindowResult:
    """Compute one window (without the gate).

    A source that cannot be read gives an error result with no numbers.
    """
    try:
        stages = read_window(cfg, window)
    except SourceError as exc:
        return WindowResult(cfg.pipeline, window, "error", error=str(exc))
    computed = compute(window, stages)
    return WindowResult(
        cfg.pipeline,
        window,
        "incomplete",
        events=computed.events,
        stages=computed.stages,
        end_to_end=computed.end_to_end,
        missing=computed.missing,
        notes=_notes(stages),
    )


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
) -> RunReport:
    """Reconcile every window of [start, end), gate it, store it; returns the report."""
    windows = Window(start, end).split(cfg.window.size)
    suite = ensure_suite(cfg)  # configuration problems surface before any reading
    run_id = str(uuid.uuid4())
    if store is not None:
        store.upgrade()  # an unreachable store fails the run before any work
        run_id = store.start_run(cfg.pipeline, start, end, config_digest(cfg))
    if jobs > 1 and len(windows) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(reconcile_window, [cfg] * len(windows), windows))
    else:
        results = [reconcile_window(cfg, w) for w in windows]
    validate(suite, results)
    now = now or datetime.now(UTC)
    thresholds = {s.name: cfg.thresholds_for(s.name) for s in cfg.stages[1:]}
    thresholds["end_to_end"] = cfg.thresholds
    for result in results:
        result.run_id = run_id
        _settle_status(cfg, result, now)
        if store is not None:
            store.save_window(result, thresholds)
    report = RunReport(cfg.pipeline, run_id, results)
    if store is not None:
        store.finish_run(run_id, {0: "ok", 1: "breach", 3: "error"}[report.exit_code])
    return report
