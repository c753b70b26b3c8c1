"""Alert notices and metrics after `recon run`, delivered to a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from recon.cli import main
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan

START = datetime(2026, 11, 22, tzinfo=UTC)


class Receiver:
    """A real HTTP server that records every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(202)
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
    plant(
        plan(
            Scenario(
                start=START,
                hours=2,
                events_per_hour=1000,
                seed=5,
                lake_loss=lambda h: 0.05 if h == 1 else 0.0,
            )
        ),
        targets,
    )
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


def _run(config: Path, hour: int) -> int:
    start = START + timedelta(hours=hour)
    return main(
        [
            "run",
            "--config",
            str(config),
            "--start",
            start.isoformat(),
            "--end",
            (start + timedelta(hours=1)).isoformat(),
        ]
    )


def test_one_trigger_per_breach_then_one_resolve(
    pg_url, bootstrap, unique, tmp_path, receiver
) -> None:
    """Hour 1 breaches at the lake: each route gets exactly one trigger with the numbers
    (50 of 1000 lost, 5 % > 1 %). Re-running it (a retry) sends nothing. A clean run (hour 0)
    sends exactly one resolve per route. The textfile holds the latest window's metrics."""
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
    pd = next(body for path, body in got if path == "/pd")
    assert (pd["event_action"], pd["dedup_key"], pd["routing_key"]) == (
        "trigger",
        f"recon/{unique}/lake",
        "rk-123",
    )
    assert pd["payload"]["severity"] == "critical"
    slack = next(body for path, body in got if path.startswith("/slack"))
    assert "lost 50 of 1000 events at lake" in slack["text"]

    metrics = (tmp_path / "metrics" / "recon.prom").read_text()
    assert f'recon_loss_ratio{{pipeline="{unique}",stage="lake"}} 0.05' in metrics
    assert f'recon_breach{{pipeline="{unique}",stage="lake"}} 1.0' in metrics
    assert f'recon_lost_events{{pipeline="{unique}",stage="lake"}} 50.0' in metrics
    assert "recon_last_success_timestamp_seconds" in metrics

    assert _run(config, 1) == 1  # the same breach again: already notified
    assert receiver.take() == []

    assert _run(config, 0) == 0
    got = receiver.take()
    assert sorted(path for path, _ in got) == ["/hook", "/pd", "/slack/T000/B000/secret"]
    assert {
        body.get("action", body.get("event_action"))
        for p, body in got
        if p != "/slack/T000/B000/secret"
    } == {"resolve"}
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
