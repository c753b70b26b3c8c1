"""When to notify: one small pure function, with the cases it distinguishes."""

from __future__ import annotations

from datetime import datetime, timedelta

from recon.model import AlertState

TRIGGER, RESOLVE = "trigger", "resolve"


def decide(state: AlertState, breached: bool, now: datetime, renotify: timedelta) -> str | None:
    """The notification to send for a stage after a run, if any.

    Rule 1: a new breach pages (trigger).
    Rule 2: a breach that is already firing is quiet, unless `renotify` has passed
            since the last notice (a reminder, same dedup key).
    Rule 3: a firing stage that the run found back under threshold resolves.
    Rule 4: otherwise nothing (not one notice per window or per retry).
    """
    if breached and not state.firing:
        return TRIGGER
    if breached:
        last = state.last_notified_at
        return TRIGGER if last is None or now - last >= renotify else None
    if state.firing:
        return RESOLVE
    return None
