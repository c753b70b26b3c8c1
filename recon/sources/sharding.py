"""Which shard an event belongs to: a stable hash of its canonical ID, computed columnar.

shard(id) = (the first 32 bits of MD5(UTF-8 bytes of the ID's canonical text),
big-endian, unsigned) mod count. MD5 is a fixed algorithm: DuckDB's `md5` and
PostgreSQL's `md5(text)` give the same digest on every version and machine
(DuckDB's `hash()` changes between versions and must not be used), so a
source can push the shard's predicate down (`sql_predicate`) and the rows it
returns are still filtered here, exactly (`keep`): a pushed-down superset is
harmless, a subset is not, which is why a source pushes down only where its
text form is the canonical one.

Unreadable rows (`BadRecord`) have no usable ID: they count in shard 0 only,
whose read must therefore see them all (every shard's read sees them: the
rows are filtered after reading, and a pushed-down predicate keeps rows
without an ID).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from recon.model import LedgerRead, Shard

# The shard of the text `x` in DuckDB's SQL and PostgreSQL's, bit for bit the same number.
_DUCKDB_BUCKET = "('0x' || substr(md5(x), 1, 8))::UBIGINT"
_PG_BUCKET = "('x' || substr(md5({x}), 1, 8))::bit(32)::bigint"


def shard_numbers(ids: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """Each ID's shard (0..count-1) as uint32; a null ID's is 0 (it is no event's)."""
    con = duckdb.connect()
    try:
        con.register("ids", pa.table({"x": ids}))
        column = con.sql(
            f"SELECT coalesce(({_DUCKDB_BUCKET}) % {int(count)}, 0)::UINTEGER AS s FROM ids"
        ).to_arrow_table()["s"]
    finally:
        con.close()
    return np.asarray(column.combine_chunks().to_numpy(zero_copy_only=False), np.uint32)


def keep(read: LedgerRead, shard: Shard) -> LedgerRead:
    """The rows of `read` whose ID is in `shard`; its unreadable rows only in shard 0.

    Retention gaps, committed offsets, warnings and the messages' schema IDs are
    the read's, whole, in every shard: they describe the source, not its events.
    """
    if shard.count == 1:
        return read
    table = read.table
    mine = shard_numbers(table["event_id"], shard.count) == shard.index
    if not mine.all():
        table = table.filter(pa.array(mine))
    return LedgerRead(
        read.source,
        table,
        list(read.bad_records) if shard.index == 0 else [],
        list(read.gaps),
        None if read.committed is None else dict(read.committed),
        list(read.warnings),
        read.schema_ids,
    )


def sql_predicate(text_expr: str, shard: Shard) -> str:
    """A PostgreSQL condition true for the rows of `shard`, and for rows without an ID.

    `text_expr` must be the ID in its canonical text form (text, uuid::text,
    an integer's decimal text) on a UTF8 database; rows whose ID is NULL or
    empty go to every shard, so that shard 0 sees every unreadable row.
    """
    bucket = _PG_BUCKET.format(x=text_expr)
    return (
        f"({text_expr} IS NULL OR {text_expr} = '' OR {bucket} % {int(shard.count)} = "
        f"{int(shard.index)})"
    )
