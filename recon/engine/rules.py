"""Window status rules: small pure functions, combined in severity order."""

from __future__ import annotations

from datetime import datetime, timedelta

OK, BREACH, INCOMPLETE, ERROR = "ok", "breach", "incomplete", "error"
# Exit code of a run, by the worst window status in it.
SEVERITY = {OK: 0, INCOMPLETE: 0, BREACH: 1, ERROR: 3}


def is_settled(window_end: datetime, settle: timedelta, now: datetime) -> bool:
    """A window is final once `settle` has passed after its end (late events had time)."""
    return now >= window_end + settle


def window_status(
    *, error: bool, breach: bool, pending: int, unverifiable: int, settled: bool
) -> str:
    """The status of one window.

    Rule 1: a source could not be read -> error (no numbers, never zeros).
    Rule 2: a loss above threshold -> breach, even while other events are in
            flight: pending events are never counted as lost, so the loss is real.
    Rule 3: events still in flight, unverifiable events, or a window younger
            than its settle time -> incomplete: re-run later, it will be restated.
    Rule 4: otherwise ok.
    """
    if error:
        return ERROR
    if breach:
        return BREACH
    if pending or unverifiable or not settled:
        return INCOMPLETE
    return OK


def run_exit_code(statuses: list[str]) -> int:
    """0 all ok or incomplete, 1 a breach, 3 a window could not be computed.

    An error outranks a breach: the run is incomplete and must be retried, and
    the breached windows it did compute are stored either way.
    """
    return max((SEVERITY[s] for s in statuses), default=0)
