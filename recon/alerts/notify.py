"""After a run: decide per stage whether to trigger, re-notify or resolve, and deliver."""

from __future__ import annotations

from datetime import datetime

from recon.alerts.notifiers import Notice, deliver
from recon.alerts.rules import TRIGGER, decide
from recon.config import END_TO_END, PipelineConfig
from recon.engine.runner import RunReport
from recon.model import StageMetrics, WindowResult
from recon.store import ResultStore
from recon.timeutil import iso


def _metric(window: WindowResult, stage: str) -> StageMetrics:
    assert window.end_to_end is not None
    return next(m for m in [*window.stages, window.end_to_end] if m.stage == stage)


def _breached(window: WindowResult, stage: str) -> bool:
    """Whether `stage` breached in `window`, for alerting.

    End to end counts only when no single hop breached (a spread-out loss), so
    one incident does not page twice.
    """
    if stage != END_TO_END:
        return _metric(window, stage).breach
    return (
        window.end_to_end is not None
        and window.end_to_end.breach
        and not any(m.breach for m in window.stages)
    )


def notices(
    cfg: PipelineConfig, report: RunReport, store: ResultStore, now: datetime
) -> list[Notice]:
    """The notices this run calls for, given the stored alert state."""
    assert cfg.alerts is not None
    computed = [w for w in report.windows if w.error is None and w.end_to_end is not None]
    if not computed:
        return []  # a failed run says nothing about whether a stage recovered
    found = []
    for stage in [*(s.name for s in cfg.stages[1:]), END_TO_END]:
        breached = [w for w in computed if _breached(w, stage)]
        action = decide(
            store.alert_state(cfg.pipeline, stage), bool(breached), now, cfg.alerts.renotify
        )
        if action is None:
            continue
        # A trigger shows the worst breached window; a resolve the latest computed one.
        if action == TRIGGER:
            window = max(breached, key=lambda w: _metric(w, stage).loss_rate)
        else:
            window = computed[-1]
        m = _metric(window, stage)
        threshold = cfg.thresholds if stage == END_TO_END else cfg.thresholds_for(stage)
        found.append(
            Notice(
                action=action,
                pipeline=cfg.pipeline,
                stage=stage,
                window_start=iso(window.window.start),
                window_end=iso(window.window.end),
                loss_rate=m.loss_rate,
                threshold=threshold.loss_rate,
                lost=m.lost,
                upstream=m.upstream,
                breached_windows=len(breached),
                window_id=window.window_id,
                run_id=report.run_id,
            )
        )
    return found


def notify(
    cfg: PipelineConfig, report: RunReport, store: ResultStore, now: datetime
) -> list[Notice]:
    """Send every notice this run calls for to every route; advance the state after each."""
    if cfg.alerts is None or not cfg.alerts.routes:
        return []
    sent = notices(cfg, report, store, now)
    for notice in sent:
        for route in cfg.alerts.routes:
            deliver(route, notice)  # raises after its retries: the state stays as it was
        store.save_alert_state(
            cfg.pipeline,
            notice.stage,
            firing=notice.action == TRIGGER,
            notified_at=now,
            window_id=notice.window_id,
        )
    return sent
