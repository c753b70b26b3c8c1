"""After a run: per stage and route, trigger, re-notify or resolve, following the state.

The decision is made on the pipeline's state (`state.pipeline_state`), not on
the run's windows: a stage stays breached while any window of the horizon is,
so a clean next window does not resolve it, and restating a breached window
that is still breached does not open a second incident. Each route keeps its
own delivery state: one that failed is retried alone next run.
"""

from __future__ import annotations

from datetime import datetime

from recon.alerts.channels import AlertDeliveryError, Notice, deliver
from recon.alerts.decision import TRIGGER, decide
from recon.alerts.prometheus import publish
from recon.alerts.state import PipelineState, StageState, WindowRef, pipeline_state
from recon.config import PipelineConfig, Route
from recon.errors import ReconError
from recon.store import ResultStore
from recon.timeutil import iso


def notice_for(
    cfg: PipelineConfig, state: StageState, action: str, run_id: str, now: datetime
) -> Notice | None:
    """The notice about one stage: its worst breached window, or for a resolve its latest."""
    window = state.worst if action == TRIGGER else state.latest
    if window is None:
        if action == TRIGGER:
            return None
        # Nothing left within the horizon: the incident is closed all the same.
        window = WindowRef(now, now, None, 0.0, 0, 0)
    threshold = cfg.thresholds_for(state.stage)
    return Notice(
        action=action,
        pipeline=cfg.pipeline,
        stage=state.stage,
        window_start=iso(window.start),
        window_end=iso(window.end),
        loss_rate=window.loss_rate,
        threshold=threshold.loss_rate,
        lost=window.lost,
        upstream=window.upstream,
        breached_windows=state.breached_windows,
        window_id=window.window_id,
        run_id=run_id,
    )


def notify(
    cfg: PipelineConfig,
    store: ResultStore,
    now: datetime,
    run_id: str = "",
    state: PipelineState | None = None,
) -> list[Notice]:
    """Send what the pipeline's state calls for to every route; advance each route's state.

    Every route is tried; a route that fails keeps its state (the notice is sent
    again next run) and, after all were tried, AlertDeliveryError names them.
    """
    if cfg.alerts is None or not cfg.alerts.routes:
        return []
    state = state or pipeline_state(cfg, store, now)
    sent, failed = [], []
    for stage in state.stages.values():
        for route in cfg.alerts.routes:
            notice = _due(cfg, store, stage, route, now, run_id)
            if notice is None:
                continue
            try:
                deliver(route, notice)
            except AlertDeliveryError as exc:
                failed.append(str(exc))
                continue
            store.save_alert_state(
                cfg.pipeline,
                stage.stage,
                route.key,
                firing=notice.action == TRIGGER,
                notified_at=now,
                window_id=notice.window_id,
            )
            sent.append(notice)
    if failed:
        raise AlertDeliveryError("; ".join(failed))
    return sent


def _due(
    cfg: PipelineConfig,
    store: ResultStore,
    stage: StageState,
    route: Route,
    now: datetime,
    run_id: str,
) -> Notice | None:
    assert cfg.alerts is not None
    told = store.alert_state(cfg.pipeline, stage.stage, route.key)
    action = decide(told, stage.breached, now, cfg.alerts.renotify)
    return None if action is None else notice_for(cfg, stage, action, run_id, now)


def publish_and_notify(
    cfg: PipelineConfig, store: ResultStore, now: datetime, run_id: str = ""
) -> list[Notice]:
    """Metrics and notices of the pipeline's state, each attempted whatever the other did.

    One failing never suppresses the other; failures are raised together after both.
    """
    state = pipeline_state(cfg, store, now)
    failures: list[ReconError] = []
    sent: list[Notice] = []
    try:
        publish(cfg, state, store.last_success(cfg.pipeline), store.last_error(cfg.pipeline))
    except ReconError as exc:
        failures.append(exc)
    try:
        sent = notify(cfg, store, now, run_id, state)
    except ReconError as exc:
        failures.append(exc)
    if failures:
        raise AlertDeliveryError("; ".join(str(f) for f in failures)) from failures[0]
    return sent
