"""The shipped alerting rules on a real Prometheus scraping a real Pushgateway (promstack)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from . import promstack
from .promstack import Prometheus, pushgateway_server

# pytest finds fixtures by name in the test module (and `prometheus` needs the other two).
prometheus = promstack.prometheus
prometheus_rules = promstack.prometheus_rules
pushgateway = promstack.pushgateway


def _push_breach(gateway: str, value: int) -> None:
    """pushadd `recon_breach{pipeline="p",stage="lake"}`, grouped like recon's own pushes."""
    registry = CollectorRegistry()
    breach = Gauge(
        "recon_breach", "1 if the stage lost more than its threshold", ["stage"], registry=registry
    )
    breach.labels(stage="lake").set(value)
    pushadd_to_gateway(gateway, job="recon", registry=registry, grouping_key={"pipeline": "p"})


def test_loss_breach_fires_and_resolves(
    pushgateway: str, prometheus: Prometheus, tmp_path: Path
) -> None:
    """A pushed breach fires ReconLossBreach; pushing 0 resolves it."""
    labels = {"pipeline": "p", "stage": "lake"}
    _push_breach(pushgateway, 1)
    alert = prometheus.wait_for_alert("ReconLossBreach", "firing", labels)
    # honor_labels kept the pushed job, not the scrape job's name.
    assert alert["labels"]["job"] == "recon"
    assert alert["labels"]["severity"] == "page"
    assert alert["annotations"]["summary"] == "p: lake breached its limits"

    _push_breach(pushgateway, 0)
    prometheus.wait_until_no_alert("ReconLossBreach", labels)
    assert prometheus.query('recon_breach{pipeline="p",stage="lake"}')[0]["value"][1] == "0"

    # Another Pushgateway does not inherit this one's groups (Debian's shared default file).
    with pushgateway_server(tmp_path / "second") as second:
        text = urllib.request.urlopen(f"{second}/metrics", timeout=5).read().decode()
        assert 'pipeline="p"' not in text
