"""When recon notifies: page once per breach, re-notify after the interval, resolve once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recon.alerts.decision import RESOLVE, TRIGGER, AlertState, decide

NOW = datetime(2026, 11, 28, 6, tzinfo=UTC)
EVERY = timedelta(hours=4)

CASES = [
    # state, breached now, expected, why
    (AlertState(), True, TRIGGER, "a new breach pages"),
    (AlertState(True, NOW - timedelta(hours=1)), True, None, "already paged: quiet"),
    (AlertState(True, NOW - timedelta(hours=4)), True, TRIGGER, "still breached after 4 h: remind"),
    (AlertState(True, NOW - timedelta(hours=1)), False, RESOLVE, "back under threshold: resolve"),
    (AlertState(False, NOW - timedelta(hours=9)), False, None, "nothing wrong, nothing said"),
    (AlertState(True, None), True, TRIGGER, "firing without a record of a notice: page"),
]


@pytest.mark.parametrize(("state", "breached", "want", "why"), CASES, ids=[c[-1] for c in CASES])
def test_decide(state: AlertState, breached: bool, want: str | None, why: str) -> None:
    assert decide(state, breached, NOW, EVERY) == want
