"""Window values and the status rules (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recon.engine.status import run_exit_code, window_status
from recon.model import Ranges, Window

T = datetime(2026, 11, 20, tzinfo=UTC)


def test_window_is_half_open_utc_and_splits() -> None:
    w = Window(T, T + timedelta(hours=2, minutes=30))
    parts = w.split(timedelta(hours=1))
    assert [(p.start.hour, p.end.hour, p.end.minute) for p in parts] == [
        (0, 1, 0),
        (1, 2, 0),
        (2, 2, 30),
    ]
    with pytest.raises(ValueError, match="not after"):
        Window(T, T)
    naive = Window(datetime(2026, 11, 20), datetime(2026, 11, 21))
    assert naive.start.tzinfo is not None


STATUS = [
    # error, breach, pending, unverifiable, settled -> status, why
    (True, True, 0, 0, True, "error", "a source could not be read: no numbers at all"),
    (False, True, 5, 0, True, "breach", "a real loss pages even with events in flight"),
    (False, False, 5, 0, True, "incomplete", "events in flight: restated later"),
    (False, False, 0, 3, True, "incomplete", "retention gap: cannot be judged yet/ever"),
    (False, False, 0, 0, False, "incomplete", "younger than the settle time"),
    (False, False, 0, 0, True, "ok", "nothing wrong"),
]


@pytest.mark.parametrize(
    ("error", "breach", "pending", "unverifiable", "settled", "want", "why"),
    STATUS,
    ids=[s[-1] for s in STATUS],
)
def test_window_status(error, breach, pending, unverifiable, settled, want, why) -> None:
    assert (
        window_status(
            error=error, breach=breach, pending=pending, unverifiable=unverifiable, settled=settled
        )
        == want
    )


def test_exit_codes() -> None:
    assert run_exit_code(["ok", "incomplete"]) == 0
    assert run_exit_code(["ok", "breach"]) == 1
    assert run_exit_code(["breach", "error"]) == 3


def test_search_ranges_reject_negative_grace_or_skew() -> None:
    """A negative range would put a window outside its own downstream range."""
    for bad in ({"grace": timedelta(seconds=-1)}, {"skew": timedelta(seconds=-1)}):
        with pytest.raises(ValueError, match="must not be negative"):
            Ranges(**bad)
    assert Ranges(grace=timedelta(0), skew=timedelta(0)).skew == timedelta(0)
