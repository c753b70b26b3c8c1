"""Alert notices and metrics after `recon run`, delivered to a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from recon.cli import main
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth

from . import promstack
from .promstack import Prometheus

START = datetime(2026, 11, 22, tzinfo=UTC)


class Receiver:
    """A real HTTP server that records every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.fail_paths: set[str] = set()  # answered with HTTP 500
        received, fail_paths = self.received, self.fail_paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(500 if self.path in fail_paths else 202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> list[tuple[str, dict]]:
        taken = list(self.received)
        self.received.clear()
        return taken


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _scenario() -> Scenario:
    return Scenario(
        start=START, hours=3, events_per_hour=1000, seed=5,
        lake_loss=lambda h: 0.05 if h == 1 else 0.0,
    )  # fmt: skip


def _planted(
    pg_url: str,
    bootstrap: str,
    unique: str,
    tmp_path: Path,
    receiver: Receiver,
    routes: list[dict] | None = None,
) -> Path:
    """2 hours x 1000 events; hour 1 loses 5 % at the lake (over its 1 % threshold)."""
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(plan(_scenario()), targets)
    config = pipeline_config(targets, thresholds={"loss_rate": 0.01})
    config["alerts"] = {
        "renotify": "4h",
        "routes": routes
        or [
            {"kind": "webhook", "url": f"{receiver.url}/hook"},
            {"kind": "pagerduty", "url": f"{receiver.url}/pd", "routing_key": "rk-123"},
            {"kind": "slack", "url": f"{receiver.url}/slack/T000/B000/secret"},
        ],
    }
    config["metrics"] = {"textfile": str(tmp_path / "metrics" / "recon.prom")}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The planted day is judged the same day: inside the state's 7-day horizon.
NOW = "2026-11-22T12:00:00Z"


def _run(config: Path, hour: int, *extra: str) -> int:
    start = START + timedelta(hours=hour)
    args = ["run", "--config", str(config), "--start", start.isoformat()]
    args += ["--end", (start + timedelta(hours=1)).isoformat(), "--now", NOW, *extra]
    return main(args)


def _restate_hour_1_clean(tmp_path: Path, unique: str) -> None:
    """The loader reprocessed hour 1: its 50 lost events land in the lake after all."""
    p = plan(_scenario())
    lost = sorted(truth(p, timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))[1]
                  .missing[("lake", "lost")])  # fmt: skip
    part = tmp_path / "lake" / "dt=2026-11-22" / "hour=01"
    pq.write_table(
        pa.table({"event_id": lost, "ingested_at": pa.array([START + timedelta(hours=1, minutes=30)]
                  * len(lost), pa.timestamp("us", tz="UTC"))}),
        part / "reprocessed.parquet",
    )  # fmt: skip
    assert len(lost) == 50


def test_one_incident_per_breach_until_it_is_restated(
    pg_url, bootstrap, unique, tmp_path, receiver
) -> None:
    """Hour 1 breaches at the lake: each route gets exactly one trigger with the numbers
    (50 of 1000 lost, 5 % > 1 %). Re-running it (a retry) sends nothing. A clean run of
    hour 0 sends nothing either: hour 1 is still breached within the horizon (before, it
    resolved the incident, and re-running hour 1 opened a second one). Once the 50 events
    are reprocessed into the lake and hour 1 is restated clean, exactly one resolve per
    route. The textfile describes the pipeline's state, not the last window."""
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver)
    assert _run(config, 1) == 1
    got = receiver.take()
    assert sorted(path for path, _ in got) == ["/hook", "/pd", "/slack/T000/B000/secret"]
    hook = next(body for path, body in got if path == "/hook")
    assert (hook["action"], hook["dedup_key"], hook["stage"]) == (
        "trigger",
        f"recon/{unique}/lake",
        "lake",
    )
    assert (hook["lost"], hook["upstream"], hook["loss_rate"], hook["threshold"]) == (
        50,
        1000,
        0.05,
        0.01,
    )
    assert hook["window"] == {"start": "2026-11-22T01:00:00Z", "end": "2026-11-22T02:00:00Z"}
    assert hook["window_id"] in hook["missing_ids"]
    pd_ = next(body for path, body in got if path == "/pd")
    assert (pd_["event_action"], pd_["dedup_key"], pd_["routing_key"]) == (
        "trigger",
        f"recon/{unique}/lake",
        "rk-123",
    )
    assert pd_["payload"]["severity"] == "critical"
    slack = next(body for path, body in got if path.startswith("/slack"))
    assert "lost 50 of 1000 events at lake" in slack["text"]

    assert _run(config, 1) == 1  # the same breach again: already notified
    assert receiver.take() == []
    assert _run(config, 0) == 0  # a clean window elsewhere: the incident stays open
    assert receiver.take() == []
    metrics = (tmp_path / "metrics" / "recon.prom").read_text()
    lake = f'pipeline="{unique}",stage="lake"'
    assert f"recon_breach{{{lake}}} 1.0" in metrics
    assert f"recon_breached_windows{{{lake}}} 1.0" in metrics
    assert f"recon_loss_ratio{{{lake}}} 0.05" in metrics
    assert f"recon_lost_events{{{lake}}} 50.0" in metrics
    assert f"recon_upstream_events{{{lake}}} 2000.0" in metrics
    assert f'recon_windows{{pipeline="{unique}",status="breach"}} 1.0' in metrics
    assert f'recon_windows{{pipeline="{unique}",status="ok"}} 1.0' in metrics
    assert f'recon_breach{{pipeline="{unique}",stage="end_to_end"}} 0.0' in metrics

    _restate_hour_1_clean(tmp_path, unique)
    assert _run(config, 1) == 0
    got = receiver.take()
    assert sorted(path for path, _ in got) == ["/hook", "/pd", "/slack/T000/B000/secret"]
    assert {
        body.get("action", body.get("event_action"))
        for p, body in got
        if p != "/slack/T000/B000/secret"
    } == {"resolve"}
    assert f"recon_breach{{{lake}}} 0.0" in (tmp_path / "metrics" / "recon.prom").read_text()
    assert _run(config, 0) == 0
    assert receiver.take() == []


def test_failed_delivery_is_an_error_and_is_sent_again(
    pg_url, bootstrap, unique, tmp_path, receiver, capsys
) -> None:
    """A route that refuses connections: exit code 3 naming the route (not its secret path);
    the state is not advanced, so the next run with a working route sends the trigger."""
    dead = [{"kind": "webhook", "url": "http://127.0.0.1:1/hook/secret-token", "attempts": 2}]
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver, routes=dead)
    assert _run(config, 1) == 3
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and "secret-token" not in err
    data = yaml.safe_load(config.read_text())
    data["alerts"]["routes"] = [{"kind": "webhook", "url": f"{receiver.url}/hook"}]
    config.write_text(yaml.safe_dump(data))
    assert _run(config, 1) == 1
    assert [(p, b["action"]) for p, b in receiver.take()] == [("/hook", "trigger")]


def test_each_route_keeps_its_own_delivery_state(
    pg_url, bootstrap, unique, tmp_path, receiver
) -> None:
    """Two routes; the second answers 500 on the first run: the first route gets the
    trigger once, the run exits 3. On the next run the second route recovers and gets
    its trigger, and the first route gets nothing more (before, it was paged twice)."""
    receiver.fail_paths.add("/flaky")
    routes = [
        {"kind": "webhook", "url": f"{receiver.url}/steady"},
        {"kind": "webhook", "url": f"{receiver.url}/flaky", "attempts": 1},
    ]
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver, routes=routes)
    assert _run(config, 1) == 3
    assert [(p, b["action"]) for p, b in receiver.take()] == [
        ("/steady", "trigger"),
        ("/flaky", "trigger"),
    ]
    receiver.fail_paths.clear()
    assert _run(config, 1) == 1
    assert [(p, b["action"]) for p, b in receiver.take()] == [("/flaky", "trigger")]
    assert _run(config, 1) == 1
    assert receiver.take() == []


def test_a_metrics_outage_does_not_suppress_the_page(
    pg_url, bootstrap, unique, tmp_path, receiver, capsys
) -> None:
    """The Pushgateway refuses connections: the webhook still gets its trigger, and the run
    exits 3 naming the Pushgateway, after both were attempted (before, publishing failed
    first and nothing was sent)."""
    routes = [{"kind": "webhook", "url": f"{receiver.url}/hook"}]
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver, routes=routes)
    data = yaml.safe_load(config.read_text())
    data["metrics"] = {"pushgateway": "http://127.0.0.1:1"}
    config.write_text(yaml.safe_dump(data))
    assert _run(config, 1) == 3
    assert "pushgateway http://127.0.0.1:1" in capsys.readouterr().err
    assert [(p, b["action"]) for p, b in receiver.take()] == [("/hook", "trigger")]


def test_an_error_run_keeps_what_is_known(pg_url, bootstrap, unique, tmp_path, receiver) -> None:
    """Hour 1 breached; then a run of hour 2 whose Kafka is unreachable: exit 3, the
    textfile still says the lake is breached (before, the error run rewrote it without any
    recon_breach series and the alert resolved) and adds when the error happened."""
    routes = [{"kind": "webhook", "url": f"{receiver.url}/hook"}]
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver, routes=routes)
    assert _run(config, 1) == 1
    receiver.take()
    data = yaml.safe_load(config.read_text())
    data["stages"][1]["bootstrap"] = "127.0.0.1:1"
    data["stages"][1]["timeout_s"] = 2
    config.write_text(yaml.safe_dump(data))
    assert _run(config, 2) == 3
    metrics = (tmp_path / "metrics" / "recon.prom").read_text()
    assert f'recon_breach{{pipeline="{unique}",stage="lake"}} 1.0' in metrics
    assert f'recon_last_error_timestamp_seconds{{pipeline="{unique}"}}' in metrics
    assert f'recon_windows{{pipeline="{unique}",status="error"}} 1.0' in metrics
    assert receiver.take() == []


prometheus = promstack.prometheus
prometheus_rules = promstack.prometheus_rules
pushgateway = promstack.pushgateway


def test_prometheus_fires_for_the_incident_when_the_last_window_is_clean(
    pg_url, bootstrap, unique, tmp_path, receiver, pushgateway: str, prometheus: Prometheus
) -> None:
    """The nightly shape: hours 0-2 in one run, hour 1 breached at the lake, hour 2 (the
    last window) clean. recon pushes the pipeline's state to a Pushgateway that a real
    Prometheus scrapes with recon's rules: ReconLossBreach fires for the lake (and not for
    end_to_end: one incident, as recon's own notice). Before, the gauges described the last
    window and the alert never fired. Once hour 1 is restated clean, the alert resolves."""
    routes = [{"kind": "webhook", "url": f"{receiver.url}/hook"}]
    config = _planted(pg_url, bootstrap, unique, tmp_path, receiver, routes=routes)
    data = yaml.safe_load(config.read_text())
    data["metrics"] = {"pushgateway": pushgateway}
    config.write_text(yaml.safe_dump(data))
    args = ["run", "--config", str(config), "--now", NOW]
    assert main([*args, "--start", "2026-11-22T00:00Z", "--end", "2026-11-22T03:00Z"]) == 1
    lake = {"pipeline": unique, "stage": "lake"}
    alert = prometheus.wait_for_alert("ReconLossBreach", "firing", lake)
    assert alert["labels"]["severity"] == "page"
    firing = [a["labels"]["stage"] for a in prometheus.alerts() if a["state"] == "firing"]
    assert firing == ["lake"]
    assert [(p, b["action"], b["stage"]) for p, b in receiver.take()] == [
        ("/hook", "trigger", "lake")
    ]
    _restate_hour_1_clean(tmp_path, unique)
    assert main([*args, "--start", "2026-11-22T01:00Z", "--end", "2026-11-22T02:00Z"]) == 0
    prometheus.wait_until_no_alert("ReconLossBreach", lake)
    assert [(p, b["action"]) for p, b in receiver.take()] == [("/hook", "resolve")]
