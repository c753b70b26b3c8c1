"""Notifiers: Slack incoming webhook, PagerDuty Events API v2, a generic JSON webhook.

Delivery is retried with backoff; a notice that still cannot be delivered is an
error (exit code 3), never dropped: the alert state is only advanced after
every route took it, so the next run sends it again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from recon.config import Route, safe_url
from recon.errors import ReconError

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class AlertDeliveryError(ReconError):
    """A notice could not be delivered after its retries."""

    exit_code = 3


@dataclass(frozen=True)
class Notice:
    """One trigger or resolve for one (pipeline, stage)."""

    action: str  # trigger | resolve
    pipeline: str
    stage: str
    window_start: str
    window_end: str
    loss_rate: float
    threshold: float | None
    lost: int
    upstream: int
    breached_windows: int
    window_id: str | None
    run_id: str

    @property
    def dedup_key(self) -> str:
        """One incident per pipeline and stage."""
        return f"recon/{self.pipeline}/{self.stage}"

    @property
    def summary(self) -> str:
        """One line for humans."""
        if self.action == "resolve":
            return f"recon: {self.pipeline} {self.stage} is back under its loss threshold"
        if not self.lost:  # unreadable rows or volume, not loss: the notes say which
            return (
                f"recon: {self.pipeline} {self.stage} breached its limits (unreadable rows or "
                f"volume) in window {self.window_start}..{self.window_end}; "
                f"{self.breached_windows} window(s) breached"
            )
        limit = "n/a" if self.threshold is None else f"{self.threshold:.4%}"
        return (
            f"recon: {self.pipeline} lost {self.lost} of {self.upstream} events at "
            f"{self.stage} ({self.loss_rate:.4%} > {limit}) in window "
            f"{self.window_start}..{self.window_end}; {self.breached_windows} window(s) "
            f"breached"
        )

    def details(self) -> dict[str, Any]:
        """Everything a responder needs, including how to list the missing IDs."""
        return {
            "action": self.action,
            "dedup_key": self.dedup_key,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "window": {"start": self.window_start, "end": self.window_end},
            "loss_rate": self.loss_rate,
            "threshold": self.threshold,
            "lost": self.lost,
            "upstream": self.upstream,
            "breached_windows": self.breached_windows,
            "run_id": self.run_id,
            "window_id": self.window_id,
            "missing_ids": (
                "SELECT event_id, outcome, last_stage, last_location FROM recon_missing_events "
                f"WHERE window_id = '{self.window_id}' AND stage = '{self.stage}'"
                if self.window_id
                else None
            ),
            "summary": self.summary,
        }


def body(route: Route, notice: Notice) -> dict[str, Any]:
    """The JSON a route expects."""
    if route.kind == "slack":
        return {"text": notice.summary}
    if route.kind == "pagerduty":
        event: dict[str, Any] = {
            "routing_key": route.routing_key,
            "event_action": notice.action,
            "dedup_key": notice.dedup_key,
        }
        if notice.action == "trigger":
            event["payload"] = {
                "summary": notice.summary[:1024],
                "source": "recon",
                "severity": "critical",
                "component": notice.stage,
                "group": notice.pipeline,
                "custom_details": notice.details(),
            }
        return event
    return notice.details()


def deliver(route: Route, notice: Notice, backoff_s: float = 1.0) -> None:
    """POST the notice, retrying with exponential backoff; AlertDeliveryError if it fails."""
    url = route.url or (PAGERDUTY_URL if route.kind == "pagerduty" else None)
    if url is None:
        raise AlertDeliveryError(f"{route.kind} route has no url")
    data = json.dumps(body(route, notice)).encode()
    last_error = ""
    for attempt in range(route.attempts):
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=route.timeout_s) as response:
                if 200 <= response.status < 300:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            last_error = str(exc)
        if attempt + 1 < route.attempts:
            time.sleep(backoff_s * 2**attempt)
    raise AlertDeliveryError(
        f"{route.kind} notice {notice.action} {notice.dedup_key} to {safe_url(url)} failed "
        f"after {route.attempts} attempts: {last_error}"
    )
