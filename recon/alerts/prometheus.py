"""Prometheus gauges of the pipeline's state per stage (`state.pipeline_state`).

Not the last window of a run: a stage's `recon_breach` is 1 while any window of
the horizon (`window.horizon`, 7 days) is breached at it in its latest result,
with the worst loss ratio and the number of breached windows beside it. A run
that failed publishes the same state (what is known) and the time of the error.
Written in the textfile format (node_exporter's textfile collector) and/or
pushed to a Pushgateway with `pushadd`. Rules: `alerts/recon.rules.yml`.
"""

from __future__ import annotations

import os
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile

from recon.alerts.channels import AlertDeliveryError
from recon.alerts.state import LATENCIES, PipelineState
from recon.config import PipelineConfig, safe_url
from recon.model import COUNTERS

_LABELS = ("pipeline", "stage")


def registry_for(
    cfg: PipelineConfig,
    state: PipelineState,
    last_success: datetime | None,
    last_error: datetime | None = None,
) -> CollectorRegistry:
    """The pipeline's state as gauges, in a fresh registry."""
    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: tuple[str, ...] = _LABELS) -> Gauge:
        return Gauge(name, text, labels, registry=registry)

    horizon = f"windows of the last {cfg.window.horizon} (latest results)"
    breach = gauge("recon_breach", f"1 while a window is breached at this stage, of the {horizon}")
    breached = gauge("recon_breached_windows", f"Breached {horizon} at this stage")
    loss = gauge("recon_loss_ratio", f"The worst lost / upstream of the {horizon}")
    threshold = gauge("recon_loss_ratio_threshold", "Configured loss ratio threshold")
    events = {
        c: gauge(f"recon_{c}_events", f"{c} events, summed over the {horizon}") for c in COUNTERS
    }
    latency = gauge(
        "recon_latency_seconds",
        "Latency quantiles (and max) of the latest window at this stage",
        (*_LABELS, "quantile"),
    )
    windows = gauge("recon_windows", f"The {horizon}, by status", ("pipeline", "status"))
    pipeline_only = ("pipeline",)
    window_end = gauge(
        "recon_window_end_timestamp_seconds", "End of the latest window", pipeline_only
    )
    success = gauge(
        "recon_last_success_timestamp_seconds",
        "When the last run that computed finished",
        pipeline_only,
    )
    error = gauge(
        "recon_last_error_timestamp_seconds",
        "When the last run that failed finished",
        pipeline_only,
    )
    for status, n in state.windows.items():
        windows.labels(cfg.pipeline, status).set(n)
    for stage in state.stages.values():
        labels = (cfg.pipeline, stage.stage)
        breach.labels(*labels).set(1 if stage.breached else 0)
        breached.labels(*labels).set(stage.breached_windows)
        loss.labels(*labels).set(stage.worst_loss_ratio)
        th = cfg.thresholds_for(stage.stage)
        if th.loss_rate is not None and stage.stage != cfg.origin.name:
            threshold.labels(*labels).set(th.loss_rate)
        for counter, value in stage.totals.items():
            events[counter].labels(*labels).set(value)
        for q in LATENCIES:
            value_ms = stage.latency_ms.get(q)
            if value_ms is not None:
                latency.labels(*labels, "1" if q == "max" else f"0.{q[1:]}").set(value_ms / 1000)
    if state.latest_end is not None:
        window_end.labels(cfg.pipeline).set(state.latest_end.timestamp())
    if last_success is not None:
        success.labels(cfg.pipeline).set(last_success.timestamp())
    if last_error is not None:
        error.labels(cfg.pipeline).set(last_error.timestamp())
    return registry


def publish(
    cfg: PipelineConfig,
    state: PipelineState,
    last_success: datetime | None,
    last_error: datetime | None = None,
) -> None:
    """Write the textfile and/or pushadd to the Pushgateway, as configured."""
    if cfg.metrics is None:
        return
    registry = registry_for(cfg, state, last_success, last_error)
    if cfg.metrics.textfile:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cfg.metrics.textfile)), exist_ok=True)
            write_to_textfile(cfg.metrics.textfile, registry)  # atomic: temp file + rename
        except OSError as exc:
            raise AlertDeliveryError(f"metrics textfile {cfg.metrics.textfile}: {exc}") from exc
    if cfg.metrics.pushgateway:
        try:
            pushadd_to_gateway(
                cfg.metrics.pushgateway,
                job="recon",
                grouping_key={"pipeline": cfg.pipeline},
                registry=registry,
            )
        except OSError as exc:
            raise AlertDeliveryError(
                f"pushgateway {safe_url(cfg.metrics.pushgateway)}: {exc}"
            ) from exc
