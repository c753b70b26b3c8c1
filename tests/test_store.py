"""The results store keeps missing events' times exactly, whatever the server's time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.engine import make_url

from recon.engine.loss import compute
from recon.model import MISSING_SCHEMA, StageInput, WindowResult
from recon.store import ResultStore

from .helpers import W, ledger


@pytest.fixture
def zoned_db(pg_store: str) -> str:
    """A fresh results database whose sessions default to New York time, not UTC."""
    name = make_url(pg_store).database
    admin = make_url(pg_store).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET TimeZone = 'America/New_York'")
    return pg_store


def test_missing_event_times_round_trip(zoned_db: str) -> None:
    """Three events at the origin, at microsecond times; Kafka saw a and b, the lake only a.
    Stored: b lost at the lake (last seen at Kafka 10:05:00.000002), c lost at Kafka (last
    seen at the origin 10:00:00.999999); their times come back exactly, in UTC."""
    computed = compute(
        W,
        [
            StageInput(
                "webhook",
                ledger(
                    [("a", "10:00:00"), ("b", "10:00:00.000001"), ("c", "10:00:00.999999")],
                    "receipts",
                ),
            ),
            StageInput("kafka", ledger([("a", "10:05:00"), ("b", "10:05:00.000002")], "events")),
            StageInput("lake", ledger([("a", "10:06:00")], "lake")),
        ],
    )
    assert computed.missing.schema == MISSING_SCHEMA
    store = ResultStore(zoned_db)
    store.upgrade()
    result = WindowResult(
        "p",
        W,
        "breach",
        events=computed.events,
        stages=computed.stages,
        end_to_end=computed.end_to_end,
        missing=computed.missing,
        run_id=store.start_run("p", W.start, W.end, "test"),
    )
    stored = store.missing(store.save_window(result, {}))
    got = {
        row.event_id: (row.stage, row.last_stage, row.origin_time, row.last_seen_at)
        for row in stored.itertuples()
    }
    day = W.start.date()

    def utc(hms: str, us: int) -> datetime:
        h, m, s = map(int, hms.split(":"))
        return datetime(day.year, day.month, day.day, h, m, s, us, tzinfo=UTC)

    assert got == {
        "b": ("lake", "kafka", utc("10:00:00", 1), utc("10:05:00", 2)),
        "c": ("kafka", "webhook", utc("10:00:00", 999999), utc("10:00:00", 999999)),
    }


def test_the_dashboard_reads_without_migrating_or_leaving_files(tmp_path) -> None:
    """A store at version 2: the read-only opening refuses it, naming the command that
    upgrades it, and writes nothing. Upgraded (by `recon db upgrade`), it is read, and only
    the database file is left beside it (no -wal or -shm)."""
    from recon.errors import StoreError
    from recon.store import ResultStore

    path = tmp_path / "results.sqlite"
    ResultStore(f"sqlite:///{path}").upgrade(target=2)
    reader = ResultStore(f"sqlite:///{path}", read_only=True)
    with pytest.raises(StoreError, match=r"schema version 2, this recon needs \d+: run `recon db"):
        reader.require_current()
    assert ResultStore(f"sqlite:///{path}").version() == 2
    ResultStore(f"sqlite:///{path}").upgrade()
    reader.require_current()
    assert reader.windows().empty
    reader.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]
