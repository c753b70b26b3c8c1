"""The Python API for notebooks: load a config, reconcile, get pandas DataFrames.

>>> import recon.api as recon
>>> cfg = recon.load("pipeline.yaml")
>>> result = recon.reconcile(cfg, "2026-11-27T03:00Z", "2026-11-27T04:00Z")
>>> result.stage_metrics()          # one row per window and stage
>>> result.missing(stage="lake")    # the missing event IDs and where they were last seen
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recon.config import PipelineConfig, load_config
from recon.engine.runner import RunReport, run
from recon.model import COUNTERS
from recon.store import ResultStore, store_url
from recon.timeutil import parse_instant


def load(path: str | os.PathLike[str]) -> PipelineConfig:
    """Load and validate a pipeline config (YAML)."""
    return load_config(path)


@dataclass
class Reconciliation:
    """A run's windows, as DataFrames."""

    report: RunReport

    def stage_metrics(self) -> pd.DataFrame:
        """One row per window and stage (origin first, then `end_to_end`), with status."""
        rows = []
        for w in self.report.windows:
            stages = [*w.stages, w.end_to_end] if w.end_to_end else []
            for position, m in enumerate(stages):
                rows.append(
                    {
                        "window_start": w.window.start,
                        "window_end": w.window.end,
                        "status": w.status,
                        "position": position,
                        "stage": m.stage,
                        **{c: getattr(m, c) for c in COUNTERS},
                        "loss_rate": m.loss_rate,
                        "unreadable_rate": m.unreadable_rate,
                        **{f"latency_{k}_ms": v for k, v in m.latency_ms.items()},
                        "breach": m.breach,
                    }
                )
        return pd.DataFrame(rows)

    def missing(self, stage: str | None = None, outcome: str | None = None) -> pd.DataFrame:
        """Every missing event: the stage where it vanished, the outcome, where last seen."""
        tables = [
            w.missing.append_column(
                "window_start",
                pa.array([w.window.start] * w.missing.num_rows, pa.timestamp("us", tz="UTC")),
            )
            for w in self.report.windows
            if w.missing is not None
        ]
        if not tables:
            return pd.DataFrame()
        frame: pd.DataFrame = pa.concat_tables(tables).to_pandas()
        if stage:
            frame = frame[frame["stage"] == stage]
        if outcome:
            frame = frame[frame["outcome"] == outcome]
        return frame.reset_index(drop=True)


def reconcile(
    cfg: PipelineConfig | str | os.PathLike[str],
    start: str | datetime,
    end: str | datetime | None = None,
    store: bool = False,
    now: str | datetime | None = None,
) -> Reconciliation:
    """Reconcile [start, end) (one window of the configured size if `end` is omitted).

    With `store=True` the results are written to the configured results store (by
    default the SQLite file beside the config), as `recon run` writes them; alerts
    and metrics are left to `recon run` and the DAG. `now` (default: the clock)
    decides which windows are settled and which in-flight events are past the stall.
    """
    if not isinstance(cfg, PipelineConfig):
        cfg = load_config(cfg)
    begin = parse_instant(start)
    finish = parse_instant(end) if end is not None else begin + cfg.window.size
    results = ResultStore(store_url(cfg.results, Path.cwd())) if store else None
    judged = parse_instant(now) if now is not None else None
    return Reconciliation(run(cfg, begin, finish, results, now=judged))


def trace(
    cfg: PipelineConfig | str | os.PathLike[str],
    event_id: str,
    around: str | datetime | None = None,
) -> tuple[str, pd.DataFrame]:
    """One event's verdict ("lost at lake", ...) and where each stage saw it, as a DataFrame.

    Without `around`, the window comes from the results store (missing events).
    """
    from recon.engine.explain import explain, window_of

    if not isinstance(cfg, PipelineConfig):
        cfg = load_config(cfg)
    when = parse_instant(around) if around is not None else None
    window = window_of(cfg, event_id, when, ResultStore(store_url(cfg.results, Path.cwd())))
    found = explain(cfg, event_id, window)
    return found.summary, pd.DataFrame([s.as_dict() for s in found.sightings])


@dataclass
class Stored:
    """What the results store holds for a pipeline, read without touching any source."""

    store: ResultStore
    pipeline: str | None = None

    def windows(self, latest: bool = True) -> pd.DataFrame:
        """Window results: the latest per window, or the whole history (restatements)."""
        return self.store.windows(self.pipeline, latest=latest)

    def stage_metrics(
        self, start: str | datetime | None = None, end: str | datetime | None = None
    ) -> pd.DataFrame:
        """The latest per-stage counters, one row per window and stage."""
        begin = parse_instant(start) if start is not None else None
        finish = parse_instant(end) if end is not None else None
        return self.store.stage_metrics(self.pipeline, begin, finish)

    def missing(self, window_id: str, stage: str | None = None) -> pd.DataFrame:
        """Every missing event of a stored window (optionally of one stage)."""
        return self.store.missing(window_id, stage)

    def notes(self, window_id: str) -> list[str]:
        """The notes stored with a window: unreadable rows by place, stalls, clocks."""
        return self.store.notes(window_id)

    def schema_ids(self, window_id: str) -> pd.DataFrame:
        """A window's messages, events and loss per schema ID on its Kafka stages."""
        return self.store.schema_ids(window_id)

    def expectations(self, window_id: str) -> pd.DataFrame:
        """The Great Expectations outcomes of a stored window."""
        return self.store.expectations(window_id)

    def dead_letter_errors(self, window_id: str) -> pd.DataFrame:
        """A stored window's dead-lettered events per stage and error."""
        return self.store.dead_letter_errors(window_id)

    def history(self, window_id: str) -> pd.DataFrame:
        """Every stored result of the window's time range (its restatements)."""
        return self.store.history(window_id)


def stored(cfg: PipelineConfig | str | os.PathLike[str]) -> Stored:
    """The results store of a config (its pipeline's results only), for notebooks."""
    if not isinstance(cfg, PipelineConfig):
        cfg = load_config(cfg)
    return Stored(ResultStore(store_url(cfg.results, Path.cwd())), cfg.pipeline)
