"""`parquet` source: a hive-partitioned data lake (`dt=YYYY-MM-DD/hour=HH`, `year=/month=/...`).

Only the partitions that can hold the range are listed and opened, and only
the ID and time columns are read; row groups are pruned by the time filter,
in the time column's own type (a timestamp's unit, wall times in `timezone`,
epoch integers in `time_unit`); a file whose times are text is read whole and
filtered once they are read. Partition keys are taken as the time column's UTC
calendar (a lake partitioned by ingestion hour, read with `time: ingested_at`);
a layout whose keys say nothing about time is read whole, with the same filter,
never as empty. Each file's ID column is read by its own type (`canonical_ids`);
files that disagree on its type are read, with a warning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, Window, empty_ledger
from recon.sources.base import (
    TimedSource,
    TimeKind,
    id_class,
    id_kind,
    in_window,
    ledger_table,
    shown,
    time_kind,
    unit_bound,
    usable_rows,
    utc_times,
    wall_bound,
)
from recon.sources.kind import Kind
from recon.timeutil import epoch_us


class Config(TimedSource):
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
            from_uri: tuple[pafs.FileSystem, str] = pafs.FileSystem.from_uri(cfg.path)
            return from_uri
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
    tables, bad, id_types = [], [], {}
    for f in files:
        # Rows without a time are in no window. They count where their partition
        # starts, or in every window without one: reads of [a, b) and [b, c) then
        # count them exactly as a read of [a, c) does, whatever files each opens.
        timeless = f.span is None or window.start <= f.span.start < window.end
        rows = _rows(cfg, fs, f, window, [cfg.id, cfg.time], timeless)
        ids, valid, id_bad = usable_rows(rows.table[cfg.id], rows.times, f.path, cfg.id)
        times = rows.times
        if valid is not None:
            ids, times = ids.filter(valid), times.filter(valid)
        tables.append(ledger_table(ids, times, f.path))
        bad += rows.bad + id_bad
        id_types[f.path] = rows.id_type
    table = pa.concat_tables(tables) if tables else empty_ledger()
    return LedgerRead(describe(cfg), table, bad, warnings=_mixed_ids(cfg, id_types))


@dataclass
class _Rows:
    """A file's rows in a window: `columns` of them, their times, and its rows of no time."""

    table: pa.Table
    times: pa.ChunkedArray  # timestamp[us, UTC]
    bad: list[BadRecord]
    id_type: pa.DataType | None  # the file's ID column type, when read


def _rows(
    cfg: Config,
    fs: pafs.FileSystem,
    f: DataFile,
    window: Window,
    columns: list[str],
    timeless: bool = False,
) -> _Rows:
    """`columns` of the file's rows whose time is in `window` (row groups pruned by it).

    With `timeless`, also its rows without a time: one record for those with a
    null time (counted mostly from the row groups' statistics) and one per row
    whose time is text that is no time, at its partition's start (None without one).
    """
    # Imported here: pyarrow.dataset imports pandas, which `recon check`
    # (footers only, where the partitions allow) does not need.
    import pyarrow.dataset as ds

    where = f"parquet {f.path}"
    try:
        dataset = ds.dataset(f.path, filesystem=fs, format="parquet")
        names = dataset.schema.names
        for column in (cfg.id, cfg.time):
            if column not in names:
                raise SourceError(f"{f.path}: no column {column!r} (has {names})")
        time_type = dataset.schema.field(cfg.time).type
        kind = time_kind(time_type, cfg.time, where, cfg.time_unit)
        id_type = dataset.schema.field(cfg.id).type if cfg.id in columns else None
        if id_type is not None:
            id_kind(id_type, cfg.id, where)  # a type that is no ID fails before any read
        column = ds.field(cfg.time)
        if kind == "text" or pa.types.is_dictionary(time_type):
            # Read whole: text (or a dictionary) is filtered once it is read as times.
            table = dataset.to_table(columns=columns)
            nulls = table[cfg.time].null_count if timeless else 0
        else:
            nulls = dataset.count_rows(filter=column.is_null()) if timeless else 0
            table = dataset.to_table(columns=columns, filter=_filter(cfg, kind, time_type, window))
        times, unparsed = utc_times(table[cfg.time], cfg.time, where, cfg.timezone, cfg.time_unit)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: cannot read {f.path}: {exc}") from exc
    when = None if f.span is None else f.span.start
    bad = []
    if nulls:
        reason = f"{cfg.time} is null: in no window"
        bad.append(BadRecord(f"{f.path} ({nulls} rows)", reason, nulls, when))
    if unparsed is not None and timeless:
        rows = pc.indices_nonzero(unparsed).to_pylist() if kind == "text" else None
        raws = table[cfg.time].filter(unparsed).to_pylist()
        for i, raw in enumerate(raws):
            place = f"{f.path} row {rows[i]}" if rows is not None else f.path
            bad.append(BadRecord(place, f"bad {cfg.time}: {shown(raw)}", time=when))
    keep = in_window(times, window)
    if not pc.all(keep).as_py():
        table, times = table.filter(keep), times.filter(keep)
    return _Rows(table, times, bad, id_type)


def _filter(cfg: Config, kind: TimeKind, typ: pa.DataType, window: Window) -> Any:
    """The dataset filter of `window` in the column's own type (row groups pruned by it).

    Exact: a timestamp compared in its unit (a naive one with wall times in
    `timezone`), an integer with epoch bounds in `time_unit`, each as `utc_times`
    reads them.
    """
    import pyarrow.dataset as ds

    if kind == "epoch":
        unit = cfg.time_unit or "s"
        lo, hi = (unit_bound(epoch_us(b), unit) for b in (window.start, window.end))
    elif kind == "wall":
        walls = (
            wall_bound(b, cfg.timezone).replace(tzinfo=UTC) for b in (window.start, window.end)
        )
        lo, hi = (unit_bound(epoch_us(w), typ.unit) for w in walls)
    else:
        lo, hi = (unit_bound(epoch_us(b), typ.unit) for b in (window.start, window.end))
    storage = np.iinfo(np.int64) if pa.types.is_timestamp(typ) else np.iinfo(typ.to_pandas_dtype())
    column = ds.field(cfg.time)
    if lo > storage.max or hi <= storage.min or lo >= hi:
        return ds.scalar(False)
    parts = [column.is_valid()]
    if lo > storage.min:
        parts.append(column >= pa.scalar(lo, typ))
    if hi <= storage.max:
        parts.append(column < pa.scalar(hi, typ))
    condition = parts[0]
    for part in parts[1:]:
        condition = condition & part
    return condition


_ID_RULES = {"text": "text as is", "integer": "decimal text", "uuid": "lowercase uuid text"}


def _mixed_ids(cfg: Config, types: dict[str, pa.DataType | None]) -> list[str]:
    """A warning for each kind of ID column that differs from most of the files read.

    The IDs are read by the rule of each file's type (`canonical_ids`), but IDs
    written by another writer may have been meant otherwise (an integer 42 and a
    string "000042"): an ID matches another stage's only where the texts agree.
    """
    kinds = {
        path: id_class(id_kind(t, cfg.id, f"parquet {path}"))
        for path, t in types.items()
        if t is not None
    }
    common = Counter(kinds.values()).most_common()
    if len(common) < 2:
        return []
    main = common[0][0]
    main_types = sorted({str(types[p]) for p, k in kinds.items() if k == main})
    warnings = []
    for kind, n in common[1:]:
        paths = [p for p, k in kinds.items() if k == kind]
        names = ", ".join(paths[:3]) + (f" and {n - 3} more" if n > 3 else "")
        these = sorted({str(types[p]) for p in paths})
        warnings.append(
            f"{cfg.id} is {'/'.join(these)} in {n} of {len(kinds)} files ({names}) but "
            f"{'/'.join(main_types)} in the others: read as {_ID_RULES[kind]} there and "
            f"{_ID_RULES[main]} elsewhere, so its IDs match other stages only where "
            "those texts are equal"
        )
    return warnings


def count_many(cfg: Config, windows: list[Window]) -> list[int]:
    """Rows per window from the footers (`count`)."""
    return [count(cfg, w) for w in windows]


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
        rows: int = sum(pq.read_metadata(path, filesystem=fs).num_rows for path in sorted(inside))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc
    straddling = [f for f in files if f.path not in inside]
    rest: int = sum(_rows(cfg, fs, f, window, [cfg.time]).table.num_rows for f in straddling)
    return rows + rest


KIND = Kind("parquet", Config, read, count_many=count_many, exact_ranges=True, paths=("path",))
