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


def _write(path: Path, ids: list, times: list[str], tz: str | None = "UTC") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = [at(t).replace(tzinfo=None) if tz is None else at(t) for t in times]
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
    """Hour 10 holds: one at start (in), one null id (counted), one late row; hour 11 holds one
    at exactly the end (out); hours 09 and 12 hold corrupt files that must never be opened."""
    root = tmp_path / "lake"
    day = root / "dt=2026-11-20"
    _write(day / "hour=10/part-0.parquet", ["a", None, "b"], ["10:00:00", "10:20:00", "10:59:59"])
    _write(day / "hour=10/part-1.parquet", ["c"], ["10:30:00"], tz=None)  # naive = UTC
    _write(day / "hour=11/part-0.parquet", ["d"], ["11:00:00"])
    for hour in ("09", "12"):
        (day / f"hour={hour}").mkdir()
        (day / f"hour={hour}/part-0.parquet").write_bytes(b"not parquet at all")
    read = parquet.read(_cfg(root), W)
    assert sorted(read.table.column("event_id").to_pylist()) == ["a", "b", "c"]
    assert read.unreadable == 1
    assert str(day / "hour=10/part-0.parquet") in read.bad_records[0].where
    assert set(read.table.column("location").to_pylist()) == {
        str(day / "hour=10/part-0.parquet"),
        str(day / "hour=10/part-1.parquet"),
    }


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
