"""The receipts-vs-lake comparison as a skilled data engineer writes it in 2026.

No recon code: the receipts via ADBC's PostgreSQL driver (binary COPY straight
into Arrow), the lake via a pyarrow dataset with the time filter pushed down,
one DuckDB `ANTI JOIN` of each event's first receipt against the lake's IDs,
per-hour counts, and the missing IDs written to parquet (what an investigation
needs next). Over the bench day, its per-hour counts are exactly recon's
`upstream - arrived` of the lake hop per window (every lake write lands within
the grace period).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc_pg
import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from floor import libpq_url


def missing_per_hour(
    pg_url: str,
    table: str,
    lake_path: Path,
    start: datetime,
    end: datetime,
    grace: timedelta,
    out: Path,
) -> dict[int, int]:
    """Hour index -> receipt IDs of that hour with no lake row up to `grace` after the day.

    The missing IDs (with their first receipt time) are written to `out`.
    """
    with adbc_pg.connect(libpq_url(pg_url)) as conn, conn.cursor() as cur:
        # Literal bounds: ADBC streams a query without parameters as binary COPY.
        cur.execute(
            f"SELECT event_id, received_at FROM {table} "
            f"WHERE received_at >= TIMESTAMPTZ '{start.isoformat()}' "
            f"AND received_at < TIMESTAMPTZ '{end.isoformat()}'"
        )
        receipts = cur.fetch_arrow_table()
    until = end + grace
    days = [str(start.date() + timedelta(days=i)) for i in range((until - start).days + 1)]
    ingested = ds.field("ingested_at")
    lake = ds.dataset(lake_path, format="parquet", partitioning="hive").to_table(
        columns=["event_id"],
        filter=ds.field("dt").isin(days) & (ingested >= start) & (ingested < until),
    )
    db = duckdb.connect()
    db.register("receipts", receipts)
    db.register("lake", lake)
    missing = db.sql(
        """
        WITH first AS (
            SELECT event_id, min(received_at) AS received_at FROM receipts GROUP BY event_id
        )
        SELECT first.* FROM first ANTI JOIN lake USING (event_id)
        """
    ).to_arrow_table()
    pq.write_table(missing, out)
    db.register("missing", missing)
    hours = db.execute(
        "SELECT (epoch_us(received_at) - epoch_us($start)) // 3600000000 AS h, count(*) "
        "FROM missing GROUP BY h",
        {"start": start},
    ).fetchall()
    return {int(h): int(n) for h, n in hours}
