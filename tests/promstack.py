"""A real Pushgateway and Prometheus for tests, each with state of its own under tmp_path.

Debian's Pushgateway defaults to --persistence.file=/var/lib/prometheus/pushgateway.data,
shared by every Pushgateway on the machine: a new one reloads old groups, and a test could
pass on them although its own push failed. Here every server gets its own files and port.

A test module uses a fixture by binding it, and the fixtures it needs, at module level
(an assignment, not an import, so ruff does not take the test arguments as redefinitions):
`pushgateway = promstack.pushgateway`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import missing_in_ci_fails

PROMETHEUS = "/usr/bin/prometheus"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
RULES = Path(__file__).resolve().parent.parent / "alerts" / "recon.rules.yml"

STARTUP_TIMEOUT = 30.0
# One scrape plus one rule evaluation is ~2 s at 1 s intervals; 30 s only on a slow machine.
WAIT_TIMEOUT = 30.0
POLL = 0.2


def free_port() -> int:
    """A loopback port free right now (the server may still lose a race for it: retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        missing_in_ci_fails(
            f"{binary} not found: scripts/setup.sh installs Debian's prometheus and "
            "prometheus-pushgateway"
        )


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def _server(name: str, binary: str, argv: Callable[[int], list[str]], log: Path) -> Iterator[str]:
    """Run `binary argv(port)` until `/-/ready` answers 200; yield its URL; stop it."""
    _require(binary)
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [binary, *argv(port)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    _get(f"{url}/-/ready", timeout=1)
                    break
                except OSError:  # refused, or 503 while Prometheus opens its TSDB
                    time.sleep(0.1)
            else:
                if proc.poll() is not None and "address already in use" in _tail(log):
                    continue  # lost the race for the port to another process: next port
                pytest.fail(
                    f"{name} did not become ready at {url} "
                    f"(exit code {proc.poll()}); log {log}:\n{_tail(log)}"
                )
            yield url
            return
        finally:
            _stop(proc)
    pytest.fail(f"{name}: no free port after 3 attempts; log {log}:\n{_tail(log)}")


@contextmanager
def pushgateway_server(state_dir: Path) -> Iterator[str]:
    """A Pushgateway whose persistence file lives in state_dir; yields its URL."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with _server(
        "Pushgateway",
        PUSHGATEWAY,
        lambda port: [
            f"--web.listen-address=127.0.0.1:{port}",
            # Never Debian's shared default: a restart reloads the groups of the file.
            f"--persistence.file={state_dir / 'pushgateway.data'}",
        ],
        state_dir / "pushgateway.log",
    ) as url:
        stale = [
            line
            for line in _get(f"{url}/metrics").decode().splitlines()
            if line.startswith("recon_")
        ]
        assert not stale, f"a fresh Pushgateway at {url} already holds recon series: {stale}"
        yield url


def _alert_summary(alerts: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {a['state']} {a['labels']}" for a in alerts) or "  (no alerts)"


@dataclass
class Prometheus:
    """A running Prometheus server, with polling helpers for its HTTP API."""

    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful `/api/v1/<path>` response."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            body = json.loads(_get(f"{self.url}/api/v1/{path}{query}"))
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"/api/v1/{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", f"{promql!r} is a {data['resultType']}"
        return data["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts."""
        return self.api("alerts")["alerts"]

    def wait_for_series(self, promql: str, timeout: float = WAIT_TIMEOUT) -> list[dict[str, Any]]:
        """Poll until `promql` returns at least one sample (i.e. a scrape brought it in)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"no sample for {promql!r} within {timeout} s; log {self.log}")
            time.sleep(POLL)

    def _matching(self, name: str, labels: dict[str, str] | None) -> list[dict[str, Any]]:
        want = {"alertname": name, **(labels or {})}
        return [a for a in self.alerts() if want.items() <= a["labels"].items()]

    def wait_for_alert(
        self,
        name: str,
        state: str,
        labels: dict[str, str] | None = None,
        timeout: float = WAIT_TIMEOUT,
    ) -> dict[str, Any]:
        """Poll until alert `name` is in `state` (pending/firing) with `labels`; return it."""
        assert state in ("pending", "firing"), state
        deadline = time.monotonic() + timeout
        while True:
            for alert in self._matching(name, labels):
                if alert["state"] == state:
                    return alert
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} {labels or {}} not {state} within {timeout} s; "
                    f"active alerts:\n{_alert_summary(self.alerts())}"
                )
            time.sleep(POLL)

    def wait_until_no_alert(
        self, name: str, labels: dict[str, str] | None = None, timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Poll until no alert `name` with `labels` is active (it resolved)."""
        deadline = time.monotonic() + timeout
        while True:
            still = self._matching(name, labels)
            if not still:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{name} still active after {timeout} s:\n{_alert_summary(still)}")
            time.sleep(POLL)


@contextmanager
def prometheus_server(
    state_dir: Path, pushgateway: str, rule_files: Sequence[Path] = (RULES,)
) -> Iterator[Prometheus]:
    """A Prometheus scraping `pushgateway` every second and evaluating `rule_files`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "prometheus.yml"
    # JSON is YAML. No alerting, remote_write or service discovery: nothing leaves loopback.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(Path(p).resolve()) for p in rule_files],
                "scrape_configs": [
                    {
                        "job_name": "pushgateway",
                        # Keep the pushed job/instance labels instead of the target's.
                        "honor_labels": True,
                        "static_configs": [
                            {"targets": [urllib.parse.urlsplit(pushgateway).netloc]}
                        ],
                    }
                ],
            },
            indent=2,
        )
    )
    log = state_dir / "prometheus.log"
    with _server(
        "Prometheus",
        PROMETHEUS,
        lambda port: [
            f"--config.file={config}",
            f"--storage.tsdb.path={state_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Links in alerts (generatorURL) name this server, not the machine's hostname.
            f"--web.external-url=http://127.0.0.1:{port}/",
            # The first scrape comes >= 5 s after start: service discovery hands over targets
            # on a fixed 5 s tick. The scrape manager then applies them on a tick of its own,
            # 5 s by default, which could add up to 5 s more; this hidden flag (in 2.42, not
            # in --help) shortens that second tick.
            "--scrape.discovery-reload-interval=100ms",
        ],
        log,
    ) as url:
        prom = Prometheus(url, log)
        # A wrong target fails here, clearly, instead of as an alert that never fires.
        prom.wait_for_series('up{job="pushgateway"} == 1')
        yield prom


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh Pushgateway (own port and persistence file)."""
    with pushgateway_server(tmp_path / "pushgateway") as url:
        yield url


@pytest.fixture
def prometheus_rules() -> list[Path]:
    """Rule files the `prometheus` fixture loads; override this fixture to test others."""
    return [RULES]


@pytest.fixture
def prometheus(
    tmp_path: Path, pushgateway: str, prometheus_rules: list[Path]
) -> Iterator[Prometheus]:
    """A fresh Prometheus scraping the `pushgateway` fixture and evaluating the rules."""
    with prometheus_server(tmp_path / "prometheus", pushgateway, prometheus_rules) as prom:
        yield prom
