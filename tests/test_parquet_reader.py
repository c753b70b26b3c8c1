"""`parquet` reader on a hive-partitioned lake."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recon.errors import SourceError
from recon.model import Window
from recon.sources import parquet

from .helpers import W, at


def _write(path: Path, ids: list, times: list[str | None], tz: str | None = "UTC") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = [
        None if t is None else at(t).replace(tzinfo=None) if tz is None else at(t) for t in times
    ]
    pq.write_table(
        pa.table(
            {
                "event_id": pa.array(ids, pa.string()),
                "ingested_at": pa.array(stamps, pa.timestamp("us", tz)),
                "amount": pa.array([1] * len(ids)),
            }
        ),
        path,
    )


def _cfg(root: Path) -> parquet.Config:
    return parquet.Config(name="lake", source="parquet", path=str(root))


def test_hour_partitions_pruned_and_exact(tmp_path: Path) -> None:
    """Hour 10 holds: one at start (in), one null and one empty id (counted), one late row;
    hour 11 holds one at exactly the end (out); hours 09 and 12 hold corrupt files that must
    never be opened."""
    root = tmp_path / "lake"
    day = root / "dt=2026-11-20"
    _write(
        day / "hour=10/part-0.parquet",
        ["a", None, "b", ""],
        ["10:00:00", "10:20:00", "10:59:59", "10:21:00"],
    )
    _write(day / "hour=10/part-1.parquet", ["c"], ["10:30:00"], tz=None)  # naive = UTC
    _write(day / "hour=11/part-0.parquet", ["d"], ["11:00:00"])
    for hour in ("09", "12"):
        (day / f"hour={hour}").mkdir()
        (day / f"hour={hour}/part-0.parquet").write_bytes(b"not parquet at all")
    read = parquet.read(_cfg(root), W)
    assert sorted(read.table.column("event_id").to_pylist()) == ["a", "b", "c"]
    assert read.unreadable == 2
    assert [b.reason for b in read.bad_records] == ["event_id is null", "event_id is empty"]
    assert str(day / "hour=10/part-0.parquet") in read.bad_records[0].where
    assert set(read.table.column("location").to_pylist()) == {
        str(day / "hour=10/part-0.parquet"),
        str(day / "hour=10/part-1.parquet"),
    }


def test_rows_with_a_null_time_count_where_their_partition_starts(tmp_path: Path) -> None:
    """Hour 10 holds a (10:10) and one row with a null time, hour 11 c (11:10) and two. Such
    rows are in no window: each counts in the reads whose range holds its partition's start
    (10:00, 11:00), so reads of [10:00, 10:30) and [10:30, 12:00) count 1 and 2, as one read
    of [10:00, 12:00) counts 3. In a lake without time keys they count in every read."""
    root = tmp_path / "lake"
    day = root / "dt=2026-11-20"
    _write(day / "hour=10/part-0.parquet", ["a", "b"], ["10:10:00", None])
    _write(day / "hour=11/part-0.parquet", ["c", "d", "e"], ["11:10:00", None, None])

    def counted(start: str, end: str) -> list[tuple]:
        read = parquet.read(_cfg(root), Window(at(start), at(end)))
        return [(b.where, b.reason, b.count, b.time) for b in read.bad_records]

    hour10 = (f"{day / 'hour=10/part-0.parquet'} (1 rows)", "ingested_at is null: in no window")
    hour11 = (f"{day / 'hour=11/part-0.parquet'} (2 rows)", "ingested_at is null: in no window")
    assert counted("10:00:00", "10:30:00") == [(*hour10, 1, at("10:00:00"))]
    assert counted("10:30:00", "12:00:00") == [(*hour11, 2, at("11:00:00"))]
    assert counted("10:00:00", "12:00:00") == [
        (*hour10, 1, at("10:00:00")),
        (*hour11, 2, at("11:00:00")),
    ]
    flat = tmp_path / "flat"
    _write(flat / "part-0.parquet", ["a", "b"], ["10:10:00", None])
    read = parquet.read(_cfg(flat), Window(at("23:00:00"), at("23:30:00")))
    assert [(b.count, b.time) for b in read.bad_records] == [(1, None)]


def test_corrupt_file_in_range_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    bad = root / "dt=2026-11-20/hour=10/part-0.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 garbage")
    with pytest.raises(SourceError, match=r"part-0\.parquet"):
        parquet.read(_cfg(root), W)


def test_day_partitions_and_empty_range(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write(root / "dt=2026-11-20/part-0.parquet", ["a", "b"], ["10:05:00", "23:00:00"])
    assert parquet.read(_cfg(root), W).table.column("event_id").to_pylist() == ["a"]
    by_uri = parquet.Config(name="l", source="parquet", path=f"file://{root}")
    assert parquet.read(by_uri, W).table.column("event_id").to_pylist() == ["a"]
    empty = Window(at("00:00:00").replace(day=21), at("01:00:00").replace(day=21))
    assert parquet.read(_cfg(root), empty).table.num_rows == 0


def test_missing_dataset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such dataset"):
        parquet.read(_cfg(tmp_path / "nope"), W)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not parquet at all")


def test_year_month_day_hour_layout_pruned(tmp_path: Path) -> None:
    """year=/month=/day=/hour=: hour 10 holds a (in) and b (11:00, out); the other hour,
    day, month and year directories hold corrupt files that must never be opened."""
    root = tmp_path / "lake"
    day = root / "year=2026/month=11/day=20"
    _write(day / "hour=10/part-0.parquet", ["a", "b"], ["10:59:59", "11:00:00"])
    for other in ("hour=09", "hour=11"):
        _corrupt(day / other / "part-0.parquet")
    for other in ("year=2026/month=11/day=21", "year=2026/month=10/day=20", "year=2025/month=11"):
        _corrupt(root / other / "hour=10/part-0.parquet")
    assert parquet.read(_cfg(root), W).table.column("event_id").to_pylist() == ["a"]
    assert parquet.count(_cfg(root), W) == 2  # the hour=10 partition lies inside W: its footer


def test_layouts_without_time_keys_are_read_whole_never_as_empty(tmp_path: Path) -> None:
    """A flat dataset, an unknown key (region=) and a `date=` key: each holds a (10:00, in) and
    b (09:00, out) per file; only the date= layout can prune (its other day is corrupt)."""
    flat = tmp_path / "flat"
    _write(flat / "part-0.parquet", ["a", "b"], ["10:00:00", "09:00:00"])
    (flat / "_SUCCESS").write_text("")
    region = tmp_path / "region"
    _write(region / "region=eu/part-0.parquet", ["a", "b"], ["10:00:00", "09:00:00"])
    _write(region / "region=us/part-0.parquet", ["c", "d"], ["10:30:00", "12:00:00"])
    dated = tmp_path / "dated"
    _write(dated / "date=2026-11-20/part-0.parquet", ["a", "b"], ["10:00:00", "09:00:00"])
    _corrupt(dated / "date=2026-11-19/part-0.parquet")
    assert parquet.read(_cfg(flat), W).table.column("event_id").to_pylist() == ["a"]
    assert sorted(parquet.read(_cfg(region), W).table.column("event_id").to_pylist()) == ["a", "c"]
    assert parquet.read(_cfg(dated), W).table.column("event_id").to_pylist() == ["a"]
    # Partitions that straddle the window are counted by their time column: exact.
    assert [parquet.count(_cfg(r), W) for r in (flat, region, dated)] == [1, 2, 1]


def test_keys_that_are_not_the_time_columns_calendar_do_not_prune(tmp_path: Path) -> None:
    """One row at 10:05 (in W) under each layout: a date under an unknown key (the event's
    date, a week), keys that contradict each other, an end of time (9999-12-31: its day's
    end is past the calendar) and a non-ASCII digit. None of them may drop the row or fail
    the read."""
    for layout in (
        "event_date=2026-11-19",
        "week_start=2026-11-16",
        "dt=2026-11-20/date=2026-11-19",
        "year=2026/dt=2025-12-31",
        "dt=9999-12-31",
        "year=\u00b2",
    ):
        root = tmp_path / str(abs(hash(layout)))
        _write(root / layout / "part-0.parquet", ["a"], ["10:05:00"])
        assert parquet.read(_cfg(root), W).table.column("event_id").to_pylist() == ["a"], layout
        assert parquet.count(_cfg(root), W) == 1, layout
