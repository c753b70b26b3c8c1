"""Tiny in-memory ledgers for table-driven engine tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from recon.model import LedgerRead, RetentionGap, Window
from recon.sources.base import ledger_table

DAY = datetime(2026, 11, 20, tzinfo=UTC)
W = Window(DAY.replace(hour=10), DAY.replace(hour=11))


def at(hms: str) -> datetime:
    """'10:00:01' or '10:00:01.5' on the test day (UTC); '+1 00:10' style not needed."""
    return datetime.fromisoformat(f"2026-11-20T{hms}+00:00")


def ledger(
    rows: list[tuple],
    name: str = "t",
    committed: dict[int, int] | None = None,
    gaps_until: str | None = None,
) -> LedgerRead:
    """rows: (event_id, 'HH:MM:SS') or (event_id, 'HH:MM:SS', partition, offset)."""
    ids = [r[0] for r in rows]
    times = [at(r[1]) for r in rows]
    parts = pa.array([r[2] if len(r) > 2 else None for r in rows], pa.int32())
    offs = pa.array([r[3] if len(r) > 3 else None for r in rows], pa.int64())
    table = ledger_table(
        pa.array(ids, pa.string()), pa.array(times, pa.timestamp("us", "UTC")), name, parts, offs
    )
    gaps = [RetentionGap(name, 0, 10, at(gaps_until))] if gaps_until else []
    return LedgerRead(name, table, [], gaps, committed)
