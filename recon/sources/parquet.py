"""`parquet` source: a hive-partitioned data lake (`dt=YYYY-MM-DD/hour=HH`, `year=/month=/...`).

Only the partitions that can hold the range are listed and opened, and only
the ID and time columns are read; row groups are pruned by the time filter.
Partition keys are taken as the time column's UTC calendar (a lake partitioned
by ingestion hour, read with `time: ingested_at`); a layout whose keys say
nothing about time is read whole, with the same filter, never as empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, Window, empty_ledger
from recon.sources.base import (
    SourceConfig,
    ledger_table,
    to_utc_timestamp,
    unusable_rows,
)

KIND = "parquet"


class Config(SourceConfig):
    """A parquet dataset: a local path or a pyarrow filesystem URI (s3://, gs://, file://)."""

    source: Literal["parquet"]
    path: str
    partitioning: Literal["hive"] = "hive"
    time: str = "ingested_at"


def describe(cfg: Config) -> str:
    """Where this source reads from."""
    return f"parquet {cfg.path}"


def _filesystem(cfg: Config) -> tuple[pafs.FileSystem, str]:
    try:
        if "://" in cfg.path:
            return pafs.FileSystem.from_uri(cfg.path)
        return pafs.LocalFileSystem(), cfg.path
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc


@dataclass(frozen=True)
class DataFile:
    """A data file, and the time range its hive partition keys confine its rows to."""

    path: str
    span: Window | None  # None: no key of its path bounds the time (every row is read)


# Keys whose value is a day of the time column (YYYY-MM-DD). A date under any other key
# (event_date=, week_start=) may be of another clock or a longer period: not pruned by.
DAY_KEYS = frozenset({"dt", "date", "ds"})


def data_files(fs: pafs.FileSystem, root: str, window: Window) -> list[DataFile]:
    """The data files whose partitions can hold rows of `window` (pruning by path).

    Partition keys that bound the time: `dt=`, `date=` or `ds=` with a
    YYYY-MM-DD value, `year=`/`month=`/`day=` nested in that order, and `hour=`
    inside a day. Other keys, directories that are not `key=value`, and keys that
    contradict the ones above them are walked without pruning: a layout recon
    does not know is read whole (and filtered on the time column), never read as
    empty.
    """
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise SourceError(f"parquet {root}: no such dataset directory")
    found: list[DataFile] = []
    _walk(fs, root.rstrip("/"), {}, None, window, found)
    return sorted(found, key=lambda f: f.path)


def _walk(
    fs: pafs.FileSystem,
    directory: str,
    keys: dict[str, int],
    span: Window | None,
    window: Window,
    found: list[DataFile],
) -> None:
    for entry in fs.get_file_info(pafs.FileSelector(directory)):
        if entry.base_name.startswith(("_", ".")):  # _SUCCESS, _metadata, .crc files
            continue
        if entry.type == pafs.FileType.File:
            found.append(DataFile(entry.path, span))
            continue
        if entry.type != pafs.FileType.Directory:
            continue
        key, eq, value = entry.base_name.partition("=")
        inner_keys, inner = dict(keys), span
        bound = _bound(key, unquote(value), inner_keys) if eq else None
        if bound is not None:
            lo, hi = bound
            if span is not None:
                lo, hi = max(span.start, lo), min(span.end, hi)
            if lo < hi:
                inner = Window(lo, hi)
                if inner.start >= window.end or inner.end <= window.start:
                    continue  # its rows cannot be in the window
            else:  # keys that contradict each other bound nothing
                inner_keys = dict(keys)
        _walk(fs, entry.path, inner_keys, inner, window, found)


def _bound(key: str, value: str, keys: dict[str, int]) -> tuple[datetime, datetime] | None:
    """The UTC time range [start, end) a partition's key=value confines its rows to, if any.

    `keys` holds the calendar keys seen above it and gains this one's. A value
    that is no calendar (month=13, dt=9999-12-31's end) bounds nothing.
    """
    try:
        if key in DAY_KEYS:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            keys.update(year=day.year, month=day.month, day=day.day)
            return day, day + timedelta(days=1)
        if not (value.isascii() and value.isdigit()):
            return None
        number = int(value)
        if key == "year" and not keys:
            start, end = datetime(number, 1, 1, tzinfo=UTC), datetime(number + 1, 1, 1, tzinfo=UTC)
        elif key == "month" and keys.keys() == {"year"}:
            start = datetime(keys["year"], number, 1, tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
        elif key == "day" and keys.keys() == {"year", "month"}:
            start = datetime(keys["year"], keys["month"], number, tzinfo=UTC)
            end = start + timedelta(days=1)
        elif key == "hour" and keys.keys() == {"year", "month", "day"} and number < 24:
            start = datetime(keys["year"], keys["month"], keys["day"], number, tzinfo=UTC)
            end = start + timedelta(hours=1)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    keys[key] = number
    return start, end


def read(cfg: Config, window: Window) -> LedgerRead:
    """Rows whose time column is in `window`, with the file each came from."""
    fs, root = _filesystem(cfg)
    try:
        files = data_files(fs, root, window)
    except OSError as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc
    tables, bad = [], []
    for f in files:
        # Rows with a null time are in no window. They count where their partition
        # starts, or in every window without one: reads of [a, b) and [b, c) then
        # count them exactly as a read of [a, c) does, whatever files each opens.
        timeless = f.span is None or window.start <= f.span.start < window.end
        table, file_bad = _read_file(cfg, fs, f, window, timeless)
        tables.append(table)
        bad += file_bad
    table = pa.concat_tables(tables) if tables else empty_ledger()
    return LedgerRead(describe(cfg), table, bad)


def _time_table(
    cfg: Config,
    fs: pafs.FileSystem,
    path: str,
    window: Window,
    columns: list[str],
    timeless: bool = False,
) -> tuple[pa.Table, int]:
    """`columns` of the file's rows whose time is in `window` (row groups pruned by it).

    With `timeless`, also how many rows have a null time (mostly from the row
    groups' statistics), else 0.
    """
    # Imported here: pyarrow.dataset imports pandas (~0.25 s), which `recon check`
    # (footers only, where the partitions allow) does not need.
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
        names = dataset.schema.names
        for column in (cfg.id, cfg.time):
            if column not in names:
                raise SourceError(f"{path}: no column {column!r} (has {names})")
        time_type = dataset.schema.field(cfg.time).type
        start, end = (
            pa.scalar(b, pa.timestamp("us", tz="UTC")) for b in (window.start, window.end)
        )
        if pa.types.is_timestamp(time_type):
            start, end = start.cast(time_type), end.cast(time_type)
        column = ds.field(cfg.time)
        nulls = dataset.count_rows(filter=column.is_null()) if timeless else 0
        return dataset.to_table(columns=columns, filter=(column >= start) & (column < end)), nulls
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: cannot read {path}: {exc}") from exc


def _read_file(
    cfg: Config, fs: pafs.FileSystem, f: DataFile, window: Window, timeless: bool
) -> tuple[pa.Table, list[BadRecord]]:
    """The file's ledger rows in `window`, and its unusable rows.

    Those without a usable ID, and (with `timeless`) those with a null time, as
    one record at its partition's start.
    """
    table, nulls = _time_table(cfg, fs, f.path, window, [cfg.id, cfg.time], timeless)
    times = to_utc_timestamp(table[cfg.time])
    ids = table[cfg.id]
    valid, bad = unusable_rows(ids, times, f.path, cfg.id)
    if valid is not None:
        ids, times = ids.filter(valid), times.filter(valid)
    if nulls:
        when = None if f.span is None else f.span.start
        reason = f"{cfg.time} is null: in no window"
        bad.append(BadRecord(f"{f.path} ({nulls} rows)", reason, nulls, when))
    return ledger_table(ids, times, f.path), bad


def count(cfg: Config, window: Window) -> int:
    """Rows with a time in `window`, without reading data where the partitions allow.

    A file whose partition lies inside the window counts by its footer (its rows
    are taken to be in it, as its partition says); any other (a partition that
    straddles the window's bounds, a layout without time keys) by reading its
    time column alone, filtered.
    """
    fs, root = _filesystem(cfg)
    try:
        files = data_files(fs, root, window)
        inside = {
            f.path
            for f in files
            if f.span is not None and window.start <= f.span.start and f.span.end <= window.end
        }
        rows = sum(pq.read_metadata(path, filesystem=fs).num_rows for path in sorted(inside))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc
    straddling = [f.path for f in files if f.path not in inside]
    return rows + sum(
        _time_table(cfg, fs, path, window, [cfg.time])[0].num_rows for path in straddling
    )
