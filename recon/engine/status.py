"""Window status rules: small pure functions, combined in severity order."""

from __future__ import annotations

from datetime import datetime, timedelta

from recon.model import RunStatus, Status

# Exit code of a run, by the worst window status in it.
SEVERITY = {Status.OK: 0, Status.INCOMPLETE: 0, Status.BREACH: 1, Status.ERROR: 3}
# A finished run's status in the store, by its exit code.
RUN_STATUS = {0: RunStatus.OK, 1: RunStatus.BREACH, 3: RunStatus.ERROR}


def is_settled(window_end: datetime, settle: timedelta, now: datetime) -> bool:
    """A window is final once `settle` has passed after its end (late events had time)."""
    return now >= window_end + settle


def window_status(
    *, error: bool, breach: bool, pending: int, unverifiable: int, settled: bool
) -> Status:
    """The status of one window.

    Rule 1: a source could not be read -> error (no numbers, never zeros).
    Rule 2: a loss above threshold -> breach, even while other events are in
            flight: pending events are never counted as lost, so the loss is real.
    Rule 3: events still in flight, unverifiable events, or a window younger
            than its settle time -> incomplete: re-run later, it will be restated.
    Rule 4: otherwise ok.
    """
    if error:
        return Status.ERROR
    if breach:
        return Status.BREACH
    if pending or unverifiable or not settled:
        return Status.INCOMPLETE
    return Status.OK


def run_exit_code(statuses: list[Status]) -> int:
    """0 all ok or incomplete, 1 a breach, 3 a window could not be computed.

    An error outranks a breach: the run is incomplete and must be retried, and
    the breached windows it did compute are stored either way.
    """
    return max((SEVERITY[s] for s in statuses), default=0)
