"""Prometheus metrics of a run: the latest computed window per pipeline and stage.

Written in the textfile format (for node_exporter's textfile collector) and/or
pushed to a Pushgateway with `pushadd`. Rules in `alerts/recon.rules.yml` page
on a breach and on no successful reconciliation for 26 hours.
"""

from __future__ import annotations

import os
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile

from recon.alerts.notifiers import AlertDeliveryError, safe_url
from recon.config import END_TO_END, PipelineConfig
from recon.engine.runner import RunReport
from recon.model import COUNTERS

_LABELS = ("pipeline", "stage")
# Gauges from each stage's counters, named by Prometheus conventions (base units).
_EVENT_GAUGES = {
    "lost": "Events of the latest window lost at this hop",
    "dead_lettered": "Events of the latest window dead-lettered at this hop",
    "pending": "Events of the latest window still in flight at this hop",
    "unverifiable": "Events of the latest window whose absence cannot be judged",
    "upstream": "Events of the latest window that entered this hop",
}


def registry_for(
    cfg: PipelineConfig, report: RunReport, last_success: datetime | None
) -> CollectorRegistry:
    """The run's metrics in a fresh registry."""
    registry = CollectorRegistry()
    loss = Gauge(
        "recon_loss_ratio",
        "Lost / upstream events of the latest window, per hop",
        _LABELS,
        registry=registry,
    )
    threshold = Gauge(
        "recon_loss_ratio_threshold", "Configured loss ratio threshold", _LABELS, registry=registry
    )
    breach = Gauge(
        "recon_breach",
        "1 when the latest window breached its threshold at this hop",
        _LABELS,
        registry=registry,
    )
    events = {
        k: Gauge(f"recon_{k}_events", help_text, _LABELS, registry=registry)
        for k, help_text in _EVENT_GAUGES.items()
    }
    window_end = Gauge(
        "recon_window_end_timestamp_seconds",
        "End of the latest computed window",
        ["pipeline"],
        registry=registry,
    )
    success = Gauge(
        "recon_last_success_timestamp_seconds",
        "When the last run that computed its windows finished",
        ["pipeline"],
        registry=registry,
    )
    computed = [w for w in report.windows if w.end_to_end is not None]
    if computed:
        latest = computed[-1]
        assert latest.end_to_end is not None
        window_end.labels(cfg.pipeline).set(latest.window.end.timestamp())
        for m in [*latest.stages[1:], latest.end_to_end]:
            labels = (cfg.pipeline, m.stage)
            loss.labels(*labels).set(m.loss_rate)
            breach.labels(*labels).set(1 if m.breach else 0)
            th = cfg.thresholds if m.stage == END_TO_END else cfg.thresholds_for(m.stage)
            if th.loss_rate is not None:
                threshold.labels(*labels).set(th.loss_rate)
            for key, gauge in events.items():
                assert key in COUNTERS
                gauge.labels(*labels).set(getattr(m, key))
    if last_success is not None:
        success.labels(cfg.pipeline).set(last_success.timestamp())
    return registry


def publish(cfg: PipelineConfig, report: RunReport, last_success: datetime | None) -> None:
    """Write the textfile and/or pushadd to the Pushgateway, as configured."""
    if cfg.metrics is None:
        return
    registry = registry_for(cfg, report, last_success)
    if cfg.metrics.textfile:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.metrics.textfile)), exist_ok=True)
        write_to_textfile(cfg.metrics.textfile, registry)  # atomic: temp file + rename
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
