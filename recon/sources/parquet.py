"""`parquet` source: a hive-partitioned data lake (`dt=YYYY-MM-DD/hour=HH` or `dt=` only).

Only the partitions that can hold the range are listed and opened, and only
the ID and time columns are read; row groups are pruned by the time filter.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, Window, empty_ledger
from recon.sources.base import SourceConfig, ledger_table, to_utc_timestamp
from recon.timeutil import iso

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


def _days(window: Window) -> list[datetime]:
    day = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < window.end:
        days.append(day)
        day += timedelta(days=1)
    return days


def partition_dirs(fs: pafs.FileSystem, root: str, window: Window) -> list[str]:
    """Directories of the partitions that can hold rows of `window` (pruning by path)."""
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise SourceError(f"parquet {root}: no such dataset directory")
    dirs = []
    for day in _days(window):
        day_dir = f"{root.rstrip('/')}/dt={day:%Y-%m-%d}"
        if fs.get_file_info(day_dir).type != pafs.FileType.Directory:
            continue
        hours = [
            f"{day_dir}/hour={hour:02d}"
            for hour in range(24)
            if day + timedelta(hours=hour) < window.end
            and day + timedelta(hours=hour + 1) > window.start
        ]
        present = [i.path for i in fs.get_file_info(hours) if i.type == pafs.FileType.Directory]
        # A day without hour= subdirectories is a `dt=`-only layout: the day is the partition.
        dirs.extend(present or ([day_dir] if not _has_hours(fs, day_dir) else []))
    return dirs


def _has_hours(fs: pafs.FileSystem, day_dir: str) -> bool:
    entries = fs.get_file_info(pafs.FileSelector(day_dir))
    return any(e.base_name.startswith("hour=") for e in entries)


def read(cfg: Config, window: Window) -> LedgerRead:
    """Rows whose time column is in `window`, with the file each came from."""
    fs, root = _filesystem(cfg)
    try:
        files = _files(fs, partition_dirs(fs, root, window))
    except OSError as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc
    tables, bad = [], []
    for path in files:
        table, null_times = _read_file(cfg, fs, path, window)
        tables.append(table)
        bad += [
            BadRecord(f"{path} row at {iso(t)}", f"{cfg.id} is null", time=t) for t in null_times
        ]
    table = pa.concat_tables(tables) if tables else empty_ledger()
    return LedgerRead(describe(cfg), table, bad)


def _files(fs: pafs.FileSystem, dirs: list[str]) -> list[str]:
    """The data files under the partition directories (names starting "_" or "." are not)."""
    return sorted(
        i.path
        for d in dirs
        for i in fs.get_file_info(pafs.FileSelector(d, recursive=True))
        if i.type == pafs.FileType.File and not i.base_name.startswith(("_", "."))
    )


def _read_file(
    cfg: Config, fs: pafs.FileSystem, path: str, window: Window
) -> tuple[pa.Table, list[datetime]]:
    # Imported here: pyarrow.dataset imports pandas (~0.25 s), which `recon check`
    # (footers only) never needs.
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
        table = dataset.to_table(
            columns=[cfg.id, cfg.time], filter=(column >= start) & (column < end)
        )
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: cannot read {path}: {exc}") from exc
    times = to_utc_timestamp(table[cfg.time])
    valid = pc.is_valid(table[cfg.id])
    null_times = times.filter(pc.invert(valid)).to_pylist() if table[cfg.id].null_count else []
    if null_times:
        table, times = table.filter(valid), times.filter(valid)
    return ledger_table(table[cfg.id], times, path), null_times


def count(cfg: Config, window: Window) -> int:
    """Rows of the partitions that `window` covers, from the files' footers (no data read).

    Exact when the window is made of whole partitions (an hourly window over
    `hour=` partitions of the same time column); otherwise the partitions' rows.
    """
    fs, root = _filesystem(cfg)
    try:
        files = _files(fs, partition_dirs(fs, root, window))
        return sum(pq.read_metadata(path, filesystem=fs).num_rows for path in files)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{describe(cfg)}: {exc}") from exc
