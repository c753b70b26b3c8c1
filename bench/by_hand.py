"""The receipts-vs-lake comparison as a data engineer would write it by hand, in pandas.

`pandas.read_sql` of the receipts, `pandas.read_parquet` of the lake (the
lake is parquet; read_parquet is the faster of the two hand-written ways),
`drop_duplicates`, then `merge(indicator=True)`: receipts whose ID is not in
the lake, counted per hour of the first receipt. Over the bench day this is
exactly recon's `upstream - arrived` of the lake hop per window (every lake
write lands within the grace period).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa


def missing_per_hour(
    pg_url: str, table: str, lake_path: Path, start: datetime, end: datetime, grace: timedelta
) -> dict[int, int]:
    """Hour index -> receipt IDs of that hour with no lake row up to `grace` after the day."""
    engine = sa.create_engine(pg_url)
    receipts = pd.read_sql(
        sa.text(
            f"SELECT event_id, received_at FROM {table} "
            "WHERE received_at >= :s AND received_at < :e"
        ),
        engine,
        params={"s": start, "e": end},
    )
    engine.dispose()
    lake = pd.read_parquet(
        lake_path,
        columns=["event_id", "ingested_at"],
        filters=[
            ("ingested_at", ">=", pd.Timestamp(start)),
            ("ingested_at", "<", pd.Timestamp(end + grace)),
        ],
    )
    first = receipts.sort_values("received_at").drop_duplicates("event_id")
    joined = first.merge(
        lake[["event_id"]].drop_duplicates(), on="event_id", how="left", indicator=True
    )
    missing = joined[joined["_merge"] == "left_only"]
    hours = (missing["received_at"] - pd.Timestamp(start)) // pd.Timedelta(hours=1)
    return {int(h): int(n) for h, n in hours.value_counts().sort_index().items()}
