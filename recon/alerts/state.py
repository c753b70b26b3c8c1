"""The pipeline's state per stage, from the store: what alerts and metrics both describe.

Not "the last window of the last run": the latest stored result of every window
that started within `window.horizon` before now. A stage is breached while any
of them is breached at it, and recovers once every one has been restated under
its thresholds. A run that failed changes nothing that is known (its windows
keep their earlier results); it only adds that an error happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from recon.config import PipelineConfig
from recon.model import COUNTERS, END_TO_END, Status
from recon.store import ResultStore

STATUSES = tuple(s.value for s in Status)  # the enum's order: ok, breach, incomplete, error
LATENCIES = ("p50", "p95", "p99", "max")


@dataclass(frozen=True)
class WindowRef:
    """One stored window's numbers at one stage: the one a notice is about."""

    start: datetime
    end: datetime
    window_id: str | None
    loss_rate: float
    lost: int
    upstream: int


@dataclass(frozen=True)
class StageState:
    """One stage (or end to end) over the horizon."""

    stage: str
    breached_windows: int = 0
    worst_loss_ratio: float = 0.0  # the highest loss ratio among the horizon's windows
    worst: WindowRef | None = None  # the breached window with the highest loss ratio
    latest: WindowRef | None = None  # the latest computed window
    totals: dict[str, int] = field(default_factory=dict)  # counters summed over the windows
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # of the latest window

    @property
    def breached(self) -> bool:
        """Whether the stage is breached now: one window of the horizon is."""
        return self.breached_windows > 0


@dataclass(frozen=True)
class PipelineState:
    """Every stage's state, and how many windows of the horizon have each status."""

    pipeline: str
    since: datetime
    stages: dict[str, StageState]
    windows: dict[str, int]  # status -> latest results within the horizon
    latest_end: datetime | None


def pipeline_state(cfg: PipelineConfig, store: ResultStore, now: datetime) -> PipelineState:
    """The pipeline's state at `now`, from the latest stored result of each window."""
    since = now - cfg.window.horizon
    metrics = store.stage_metrics(cfg.pipeline, start=since, end=now)
    windows = store.windows(cfg.pipeline)
    if not windows.empty:
        windows = windows[(windows["window_start"] >= since) & (windows["window_start"] < now)]
    names = [*(s.name for s in cfg.stages), END_TO_END]
    return summarize(cfg.pipeline, since, names, metrics, windows)


def summarize(
    pipeline: str, since: datetime, stages: list[str], metrics: pd.DataFrame, windows: pd.DataFrame
) -> PipelineState:
    """The state from stored rows: `metrics` (one per window and stage), `windows` (statuses).

    End to end counts as breached in a window only when no stage did (a loss spread
    thin over hops): one incident does not page twice.
    """
    counts = dict.fromkeys(STATUSES, 0)
    if not windows.empty:
        counts |= {str(k): int(v) for k, v in windows["status"].value_counts().items()}
    if metrics.empty:
        states = {s: StageState(s, totals=dict.fromkeys(COUNTERS, 0)) for s in stages}
        return PipelineState(pipeline, since, states, counts, None)
    metrics = metrics.sort_values("window_start")
    hop_breach = metrics[metrics["stage"] != END_TO_END].groupby("window_id")["breach"].any()
    states = {}
    for stage in stages:
        rows = metrics[metrics["stage"] == stage]
        breached = rows["breach"].astype(bool)
        if stage == END_TO_END:
            breached &= ~rows["window_id"].map(hop_breach).fillna(False).astype(bool)
        states[stage] = _stage_state(stage, rows, rows[breached])
    latest_end = metrics["window_end"].max().to_pydatetime()
    return PipelineState(pipeline, since, states, counts, latest_end)


def _stage_state(stage: str, rows: pd.DataFrame, breached: pd.DataFrame) -> StageState:
    if rows.empty:
        return StageState(stage, totals=dict.fromkeys(COUNTERS, 0))
    worst = None
    if not breached.empty:
        # pandas-stubs: idxmax gives a Hashable label, which .loc's overloads do not take.
        worst = _ref(breached.loc[breached["loss_rate"].idxmax()])  # type: ignore[call-overload]
    latest = rows.iloc[-1]
    return StageState(
        stage,
        breached_windows=len(breached),
        worst_loss_ratio=float(rows["loss_rate"].max()),
        worst=worst,
        latest=_ref(latest),
        totals={c: int(rows[c].sum()) for c in COUNTERS},
        latency_ms={q: _number(latest[f"latency_{q}_ms"]) for q in LATENCIES},
    )


def _ref(row: Any) -> WindowRef:
    return WindowRef(
        row["window_start"].to_pydatetime(),
        row["window_end"].to_pydatetime(),
        row["window_id"],
        float(row["loss_rate"]),
        int(row["lost"]),
        int(row["upstream"]),
    )


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
